"""``saekit demo``: the main job on the demo LM, end to end, with a readable report.

Today: load the demo LM, pack demo text, harvest several hooks in one early-stopping
pass, and show what the activations hold (sizes, norms, and which MLP neuron best
detects each planted concept family). Later issues add dictionaries to the same run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from saekit import report
from saekit.data import FAMILIES, concept_labels, load_tokens, token_mask
from saekit.models import load_model

DEMO_LM = Path(__file__).resolve().parent.parent / "checkpoints" / "demo-lm"


def neuron_concept_table(acts: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """Per concept family, the neuron whose activation best separates the family's tokens
    from all others (AUROC), with its mean activation on and off the family."""
    from sklearn.metrics import roc_auc_score

    rows = []
    x = acts.float()
    for f, family in enumerate(FAMILIES):
        on = labels == f
        if on.sum() < 2 or (~on).sum() < 2:
            continue
        # Rank neurons by a standardised mean difference (cheap), then AUROC the winner.
        diff = (x[on].mean(0) - x[~on].mean(0)) / (x.std(0) + 1e-6)
        best = int(diff.argmax())
        auroc = float(roc_auc_score(on.numpy(), x[:, best].numpy()))
        rows.append({"family": family, "tokens": int(on.sum()), "best neuron": best,
                     "mean on family": float(x[on, best].mean()),
                     "mean elsewhere": float(x[~on, best].mean()), "AUROC": auroc})
    return rows


def run_demo(out: Path = Path("runs/demo"), n_tokens: int = 64 * 1024, model_path: Path = DEMO_LM) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = load_model(model_path, device="cpu")
    card = json.loads((model_path / "train_summary.json").read_text()) if (model_path / "train_summary.json").exists() else {}
    print(f"demo LM: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, d_mlp {model.cfg.d_mlp}, "
          f"vocab {model.cfg.d_vocab}; held-out loss {card.get('heldout_loss', '?')} nats "
          f"(unigram baseline {card.get('unigram_heldout_loss', '?')})")

    tokens = load_tokens("demo:heldout", model, n_tokens)
    mask = token_mask(tokens, model)
    hooks = [f"blocks.{L}.mlp.hook_post" for L in range(model.cfg.n_layers)] + ["blocks.1.hook_resid_post"]
    from saekit.activations import harvest

    t1 = time.time()
    acts = harvest(model, hooks, tokens, batch_size=32, progress=True)
    dt = time.time() - t1
    n = int(mask.sum())
    print(f"harvested {len(hooks)} hooks x {n:,} tokens in one pass per batch: {dt:.1f}s ({n / dt:,.0f} tokens/s)")

    hook_rows = []
    for h, x in acts.items():
        norms = x.norm(dim=1)
        hook_rows.append({"hook": h, "tokens": x.shape[0], "d": x.shape[1],
                          "mean ||x||": float(norms.mean()), "max ||x||": float(norms.max()),
                          "frac > 0": float((x > 0).float().mean())})
    labels = concept_labels(tokens, model)[mask]
    mid = f"blocks.{model.cfg.n_layers // 2}.mlp.hook_post"
    concept_rows = neuron_concept_table(acts[mid], labels)

    print("\nActivations per hook\n" + report.text_table(hook_rows))
    print(f"\nPlanted concepts in {mid}: the single neuron that best detects each family\n"
          + report.text_table(concept_rows))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for h, x in acts.items():
        axes[0].hist(x.norm(dim=1).numpy(), bins=60, histtype="step", label=h)
    axes[0].set(xlabel="activation norm per token", ylabel="tokens", title="Activation norms")
    axes[0].legend(fontsize=7)
    axes[1].bar([r["family"] for r in concept_rows], [r["AUROC"] for r in concept_rows], color="#4c72b0")
    axes[1].set(ylim=(0.5, 1.0), ylabel="AUROC", title=f"Best single neuron per concept ({mid})")
    axes[1].tick_params(axis="x", rotation=30)
    png = report.figure_png(fig)
    plt.close(fig)
    (out / "activations.png").write_bytes(png)

    summary = {"model": str(model_path), "n_tokens": n, "harvest_seconds": round(dt, 2),
               "hooks": hook_rows, "concepts": concept_rows, "model_card": card}
    report.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    report.write_csv(out / "hooks.csv", hook_rows)
    report.write_csv(out / "concepts.csv", concept_rows)
    report.atomic_write_text(out / "index.html", report.html_page("saekit demo", [
        ("Demo LM", f"<p>{model.cfg.n_layers} layers, d_model {model.cfg.d_model}; held-out loss "
                    f"{card.get('heldout_loss', '?')} nats against a unigram baseline of "
                    f"{card.get('unigram_heldout_loss', '?')}.</p>"),
        ("Activations per hook", report.html_table(hook_rows)),
        (f"Planted concepts in {mid}", report.html_table(concept_rows)),
        ("Plots", report.html_img(png, "activation norms and concept AUROC")),
    ]))
    print(f"\nwrote {out}/index.html, summary.json, hooks.csv, concepts.csv, activations.png "
          f"({time.time() - t0:.0f}s in all)")
    return summary
