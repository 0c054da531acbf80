"""Transcoders on a real model: SmolLM2-135M's middle MLP replaced by a transcoder, a skip
transcoder, and (for reference) an SAE on the MLP's output, all of one width.

    python eval/transcoders_smollm2.py [--layer 15] [--train-tokens 150000] [--d-dict 4608]

The three are TopK dictionaries (k 32, ``saekit.fit``'s defaults) fitted on one harvest of
``blocks.L.hook_resid_mid`` (the MLP's input, before its layer norm) and
``blocks.L.hook_mlp_out`` of the English corpus' train split. Each is scored on held-out
windows: FVU of the MLP's output (bootstrap SE over windows), CE/KL recovered with the
MLP's output replaced (``metrics.spliced.evaluate``, SE over windows), and offline
auto-interp (``saekit interp``'s CoSy AUROC and embedding AUROC of each feature's
(offline) description against a random one, with a bootstrap 95% interval over features
of the mean difference). Results: ``eval/results/transcoders_smollm2.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import saekit  # noqa: E402
from saekit.data import token_mask  # noqa: E402
from saekit.fileio import atomic_write_text  # noqa: E402
from saekit.metrics.spliced import evaluate  # noqa: E402
from saekit.metrics.uncertainty import fvu_with_se, paired_difference  # noqa: E402
from saekit.report import json_safe, markdown_table  # noqa: E402

MODEL = "smollm2-135m"
DATA = "english"


def fit_all(model, layer: int, n_train: int, d_dict: int, k: int, seed: int) -> dict:
    hook_in, hook_out = f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_mlp_out"
    tokens = saekit.load_tokens(DATA, model, n_train, seed=seed)
    acts = saekit.harvest(model, [hook_in, hook_out], tokens, batch_size=32, progress=True)
    x, y = acts[hook_in], acts[hook_out]
    common = dict(d_dict=d_dict, k=k, model=model, progress=True, seed=seed)
    out, seconds = {}, {}
    for name, kw in (("transcoder", dict(target=y, hook=hook_in, hook_out=hook_out)),
                     ("skip transcoder", dict(target=y, hook=hook_in, hook_out=hook_out, skip=True)),
                     ("SAE on mlp_out", dict(hook=hook_out))):
        t0 = time.time()
        out[name] = saekit.fit(y if name.startswith("SAE") else x, "topk", **common, **kw)
        seconds[name] = round(time.time() - t0, 1)
    return {"dictionaries": out, "fit_seconds": seconds, "train_tokens": len(x), "hooks": (hook_in, hook_out)}


def score(model, d, tokens: torch.Tensor, hooks: tuple[str, str]) -> dict:
    """FVU of the MLP output ± SE and CE/KL recovered ± SE on ``tokens``."""
    mask = token_mask(tokens, model)
    acts = saekit.harvest(model, list(hooks), tokens, batch_size=32, mask=mask)
    with torch.no_grad():
        _, y_hat = d.reconstruct(acts[d.cfg.hook])
    fvu, fvu_se = fvu_with_se(acts[hooks[1]], y_hat, mask.nonzero()[:, 0])
    ev = evaluate(model, d, tokens, batch_size=16)
    return {"fvu": fvu, "fvu_se": fvu_se, "l0": ev["l0"], "frac_dead": ev["frac_dead"],
            **{k: ev[k] for k in ("ce_recovered_zero", "ce_recovered_zero_se", "ce_recovered_mean",
                                  "ce_recovered_mean_se", "kl_recovered_zero", "kl_recovered_zero_se")}}


def interp_scores(model, d, name: str, n_tokens: int, features: int, seed: int) -> dict:
    from saekit.interp.pipeline import InterpConfig, interp, split_tokens

    tokens = saekit.load_tokens(DATA, model, n_tokens + n_tokens // 2, split="heldout", seed=seed + 7)
    describe, scoring = split_tokens(tokens, len(tokens) * 2 // 3)
    cfg = InterpConfig(features=str(features), n_tokens=n_tokens, n_score_tokens=n_tokens // 2,
                       prism_features=0, llm="off", seed=seed)
    res = interp(model, d, describe, scoring, cfg=cfg, name=name, dataset=DATA, progress=True)
    records = json.loads(res.pages["features.json"])["features"]
    rows = [{"feature": r["feature"], **m["scores"]} for r in records for m in r["descriptions"]
            if m["method"] == "offline"]
    return {key: paired_difference(rows, key, seed=seed) for key in ("cosy_auc", "embedding_auroc")}


def table(results: dict) -> str:
    rows = []
    for name, r in results.items():
        s, i = r["scores"], r["interp"]
        cosy, emb = i["cosy_auc"], i["embedding_auroc"]
        rows.append({
            "dictionary": name, "FVU (mlp_out)": f"{s['fvu']:.3f} ± {s['fvu_se']:.3f}",
            "CE rec. (zero abl.)": f"{s['ce_recovered_zero']:.3f} ± {s['ce_recovered_zero_se']:.3f}",
            "CE rec. (mean abl.)": f"{s['ce_recovered_mean']:.3f} ± {s['ce_recovered_mean_se']:.3f}",
            "KL rec. (zero abl.)": f"{s['kl_recovered_zero']:.3f} ± {s['kl_recovered_zero_se']:.3f}",
            "L0": f"{s['l0']:.1f}", "dead %": f"{100 * s['frac_dead']:.1f}",
            "CoSy AUROC − random [95% CI] (n)": _ci(cosy), "embedding AUROC − random [95% CI] (n)": _ci(emb),
        })
    return markdown_table(rows)


def _ci(p: dict) -> str:
    if "difference" not in p:
        return f"— (n={p['n']})"
    lo, hi = p["ci95"]
    return f"{p['value']:.3f} vs {p['random']:.3f}: {p['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={p['n']})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--train-tokens", type=int, default=150_000)
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--interp-tokens", type=int, default=32_768)
    ap.add_argument("--features", type=int, default=100, help="features described and scored per dictionary")
    ap.add_argument("--d-dict", type=int, default=8 * 576)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, default=None, help="also save the dictionaries here")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "transcoders_smollm2.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    model = saekit.load_model(MODEL)
    fitted = fit_all(model, args.layer, args.train_tokens, args.d_dict, args.k, args.seed)
    eval_tokens = saekit.load_tokens(DATA, model, args.eval_tokens, split="heldout", seed=args.seed)
    results = {}
    for name, d in fitted["dictionaries"].items():
        if args.save:
            d.save(args.save / name.replace(" ", "_"))
        print(f"scoring {name} ...", flush=True)
        results[name] = {"scores": score(model, d, eval_tokens, fitted["hooks"]),
                         "interp": interp_scores(model, d, name, args.interp_tokens, args.features, args.seed),
                         "fit_seconds": fitted["fit_seconds"][name]}
    out = {"model": MODEL, "data": DATA, "hooks": fitted["hooks"], "d_dict": args.d_dict, "k": args.k,
           "train_tokens": fitted["train_tokens"], "eval_tokens": args.eval_tokens,
           "interp_tokens": args.interp_tokens, "features": args.features, "seed": args.seed,
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
           "seconds": round(time.time() - t0, 1), "command": "python eval/transcoders_smollm2.py "
           + " ".join(argv if argv is not None else sys.argv[1:]), "results": results}
    md = table(results)
    atomic_write_text(args.out, json.dumps(json_safe(out), indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), f"# Transcoders on {MODEL} ({fitted['hooks'][0]} -> "
                      f"{fitted['hooks'][1]})\n\n{md}\n\n`{out['command']}` ({out['machine']}, "
                      f"{out['seconds']:.0f} s)\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
