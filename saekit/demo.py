"""``saekit demo``: the main job end to end, with a readable report.

Load the model, pack held-out text, harvest in one early-stopping pass and show what
the activations hold; then train a TopK SAE on the middle MLP layer and fit an SNMF
beside it; report FVU, L0, dead features and CE/KL recovered on held-out text, each
with a bootstrap standard error over windows; end with a short sensitivity and steering
comparison of the two dictionaries' features against baseline directions, and feature
dashboards. Every headline number carries its n and interval (:class:`saekit.report.Stat`),
every column is explained where it appears (:mod:`saekit.report.glossary`), and the report
ends with the seconds each stage took (:class:`saekit.demo_report.Stages`). On the demo LM (:data:`DEMO_PLAN`) it also compares how well single SAE
features, SNMF features and neurons pick out the planted concepts; on a real model
(``--model smollm2-135m``, :data:`REAL_PLAN`) it reads the committed English corpus.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from saekit import report
from saekit.activations import harvest
from saekit.config import load_config
from saekit.data import FAMILIES, concept_labels, load_tokens, token_mask
from saekit.demo_report import Stages, effect_rows, interp_rows
from saekit.evals import sensitivity, steering
from saekit.formats import export, load_dictionary
from saekit.interp.pipeline import InterpConfig, interp, split_tokens
from saekit.jobs import claim_output
from saekit.metrics import StreamingStats, ce_kl_recovered_all, fvu_with_se
from saekit.models import is_native_dir, load_model
from saekit.report import Result, Section, Stat
from saekit.schema import plural
from saekit.training import fit

DEMO_LM = Path(__file__).resolve().parent.parent / "checkpoints" / "demo-lm"


def concept_table(acts: torch.Tensor, labels: torch.Tensor, unit: str = "neuron") -> list[dict]:
    """Per concept family, the unit (neuron or feature) whose activation best separates
    the family's tokens from all others (AUROC), with its mean activation on and off it."""
    from sklearn.metrics import roc_auc_score

    rows = []
    x = acts.float()
    # The spread and the column sums once, not per family: on a dictionary's codes (64k
    # tokens x 2,048 features) recomputing them for each of 7 families cost 30 s of CPU.
    sd = x.std(0) + 1e-6
    total = x.sum(0, dtype=torch.float64)
    for f, family in enumerate(FAMILIES):
        on = labels == f
        if on.sum() < 2 or (~on).sum() < 2:
            continue
        # Rank neurons by a standardised mean difference (cheap), then AUROC the winner.
        s_on = x[on].sum(0, dtype=torch.float64)
        n_on = int(on.sum())
        diff = ((s_on / n_on - (total - s_on) / (len(x) - n_on)) / sd).float()
        best = int(diff.argmax())
        auroc = float(roc_auc_score(on.numpy(), x[:, best].numpy()))
        n_on, n_off = int(on.sum()), int((~on).sum())
        rows.append({"family": family, "tokens": n_on, f"best {unit}": best,
                     "mean on family": float(x[on, best].mean()),
                     "mean elsewhere": float(x[~on, best].mean()), "AUROC": auroc,
                     "AUROC ± SE": Stat(auroc, auroc_se(auroc, n_on, n_off), n_on)})
    return rows


def auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC from ``n_pos`` positives and ``n_neg`` negatives (Hanley
    & McNeil 1982): closed form, so each concept's number carries an interval for free."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


@dataclass(frozen=True)
class DemoPlan:
    """What one demo run harvests, fits and evaluates."""

    data: str
    """Text source; evaluation reads its ``:heldout`` split, training its train split."""
    n_tokens: int
    """Held-out tokens harvested and evaluated on."""
    train_tokens: int
    """Training tokens harvested for the SAE (the SNMF takes the first ``snmf_tokens``)."""
    sae: dict
    """Keywords of ``saekit.fit`` for the TopK SAE (``d_dict`` as a multiple of the width
    when it is a float)."""
    snmf: dict
    """Keywords of ``saekit.fit`` for the SNMF."""
    snmf_tokens: int
    ce_windows: int
    """Held-out windows for CE/KL recovered (their SE shrinks as 1/sqrt of it)."""
    all_layers: bool
    """Harvest every MLP layer and a residual hook for the overview (cheap on a small model)."""
    concepts: bool
    """The text has planted concepts to detect (the demo corpus)."""
    effects: bool = True
    """Run the short sensitivity and steering comparison (about 2 minutes on SmolLM2)."""


#: The demo LM: 64k held-out tokens, every hook, an SAE of 4x width.
DEMO_PLAN = DemoPlan(data="demo", n_tokens=64 * 1024, train_tokens=128 * 1024,
                     sae=dict(d_dict=4.0, k=16, batch_size=1024, epochs=3),
                     snmf=dict(d_dict=128, k=16, wta_fraction=0.05, max_iter=40), snmf_tokens=64 * 1024,
                     ce_windows=256, all_layers=True, concepts=True)
#: A real model on CPU: the issue's quality setting (150k training tokens, fit's defaults,
#: d_dict 4x the MLP width, k 32) and an SNMF whose features keep 1% of the neurons, as
#: in Shafran et al.; 128 windows for CE/KL recovered (about 2 minutes per dictionary).
REAL_PLAN = DemoPlan(data="english", n_tokens=32 * 1024, train_tokens=150_000,
                     sae=dict(d_dict=4.0, k=32), snmf=dict(d_dict=256, k=32, wta_fraction=0.01, max_iter=30),
                     snmf_tokens=64 * 1024, ce_windows=128, all_layers=False, concepts=False)


@dataclass
class DemoConfig:
    """One ``saekit demo`` run; the rest of the plan follows from the model (:data:`DEMO_PLAN`,
    :data:`REAL_PLAN`)."""

    model: str | None = None
    """The demo LM (default), 'smollm2-135m', a .gguf file, an HF directory or name: real models
    run on the English corpus."""
    n_tokens: int | None = None
    """Held-out tokens to harvest (default 65,536 on the demo LM, 32,768 on a real model)."""

    RANGES = {"n_tokens": (1, None)}


def default_out(model: str | Path) -> Path:
    """``runs/demo`` for the demo LM, ``runs/demo-NAME`` for another model."""
    return Path("runs/demo") if _is_demo_lm(model) else Path("runs") / f"demo-{Path(str(model)).name}"


def _is_demo_lm(model: str | Path) -> bool:
    return Path(str(model)).expanduser().resolve() == DEMO_LM.resolve()


def run_demo(config: DemoConfig | str | Path | None = None, out: str | Path | None = None,
             overrides: list[str] | None = None, *, n_tokens: int | None = None,
             model_path: str | Path | None = None, plan: DemoPlan | None = None, overwrite: bool = False) -> Result:
    """The main job end to end, as ``saekit demo`` runs it, on the config's model: the demo
    LM (with its planted concepts) or a real model (``"smollm2-135m"``, a GGUF, an HF
    directory) on the English corpus.

    ``config`` is a :class:`DemoConfig`, a TOML file of its fields, or None (the
    defaults); ``overrides`` (``key=value``), then ``n_tokens`` and ``model_path`` when
    given, apply after it, and all are checked before any work. ``out`` (default
    :func:`default_out` of the model) is claimed first: refused when it holds an earlier
    report, unless ``overwrite``. ``plan`` replaces the model's :class:`DemoPlan`. For the
    earlier signature, whose first parameter was ``out``, a path that is not a ``.toml``
    file is taken as ``out``.

    Returns the demo's :class:`~saekit.report.Result` (named ``demo``: ``rows`` the
    dictionaries' evaluation, ``tables`` ``hooks``, ``concepts``, ``effects``, ``interp`` and
    ``times``, the wall-clock and CPU seconds per stage; ``summary["stage_seconds"]`` the same),
    composed from the results of the analyses it runs (the evaluators' summaries, each
    dictionary's interp result), and writes it to ``out`` with ``Result.save`` (the same
    layout as every analysis: ``demo.json``, ``demo.csv``, a CSV per table, ``report.md``,
    ``activations.png``, ``index.html``), beside the dictionaries (``sae/``, ``snmf/``,
    ``sae-saelens/``) and each dictionary's interp result (``interp/sae/``, ``interp/snmf/``)."""
    if isinstance(config, (str, Path)) and Path(config).suffix != ".toml" and out is None:
        config, out = None, config  # the earlier run_demo(out)
    cfg = load_config(config, overrides, cls=DemoConfig)
    given = {k: v for k, v in (("n_tokens", n_tokens), ("model", model_path)) if v is not None}
    if given:
        cfg = load_config(dataclasses.replace(cfg, **{k: v if k != "model" else str(v) for k, v in given.items()}),
                          cls=DemoConfig)
    model_path = cfg.model or DEMO_LM
    demo_lm = _is_demo_lm(model_path) or is_native_dir(Path(str(model_path)).expanduser())
    plan = plan or (DEMO_PLAN if demo_lm else REAL_PLAN)
    if cfg.n_tokens is not None:
        held = cfg.n_tokens
        plan = dataclasses.replace(plan, n_tokens=held, train_tokens=2 * held,
                                   snmf_tokens=min(plan.snmf_tokens, held), ce_windows=min(plan.ce_windows, 64))
    out = claim_output(out if out is not None else default_out(model_path), overwrite=overwrite, what="demo report")
    stages = Stages()
    with stages("load the model"):
        model = load_model(model_path, device="cpu")
    card_file = Path(str(model_path)) / "train_summary.json"
    card = json.loads(card_file.read_text()) if demo_lm and card_file.exists() else {}
    name = "demo LM" if demo_lm else str(model_path)
    print(f"{name}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, d_mlp {model.cfg.d_mlp}, "
          f"vocab {model.cfg.d_vocab}" + (f"; held-out loss {card.get('heldout_loss', '?')} nats "
                                          f"(unigram baseline {card.get('unigram_heldout_loss', '?')})" if card else ""))

    mid = f"blocks.{model.cfg.n_layers // 2}.mlp.hook_post"
    hooks = ([f"blocks.{L}.mlp.hook_post" for L in range(model.cfg.n_layers)] + ["blocks.1.hook_resid_post"]
             if plan.all_layers else [mid, f"blocks.{model.cfg.n_layers // 2}.hook_resid_post"])
    with stages("harvest held-out text"):
        tokens = load_tokens(f"{plan.data}:heldout", model, plan.n_tokens)
        mask = token_mask(tokens, model)
        t1 = time.time()
        acts = harvest(model, hooks, tokens, batch_size=32, progress=True)
        dt = time.time() - t1
    n = int(mask.sum())
    print(f"harvested {plural(len(hooks), 'hook')} x {n:,} tokens in one pass per batch: {dt:.1f}s ({n / dt:,.0f} tokens/s)")

    with stages("activation statistics, concepts per neuron"):
        hook_rows = []
        for h, x in acts.items():
            norms = x.norm(dim=1)
            hook_rows.append({"hook": h, "tokens": x.shape[0], "d": x.shape[1],
                              "mean ||x||": float(norms.mean()), "max ||x||": float(norms.max()),
                              "frac > 0": float((x > 0).float().mean())})
        labels = concept_labels(tokens, model)[mask] if plan.concepts else None
        concept_rows = concept_table(acts[mid], labels) if plan.concepts else []

    shipped = DEMO_LM.parent / "demo-topk"
    shipped = load_dictionary(shipped) if shipped.is_dir() and _is_demo_lm(model_path) else None
    sae, snmf, sae_rows, (sae_concepts, snmf_concepts), sae_freq = train_demo_sae(
        model, mid, acts[mid], tokens, labels, plan, stages, shipped)
    effect_rows = []
    if plan.effects:
        with stages("sensitivity and steering"):
            effect_rows = perturbation_effects(model, mid, sae, snmf)
    for r, c, s in zip(concept_rows, sae_concepts, snmf_concepts, strict=True):
        r["best SAE feature AUROC"] = c["AUROC"]
        r["best SNMF feature AUROC"] = s["AUROC"]
        r["best SAE feature AUROC ± SE"] = c["AUROC ± SE"]
        r["best SNMF feature AUROC ± SE"] = s["AUROC ± SE"]

    with stages("save the dictionaries, plot"):
        png = _plot(acts, concept_rows, sae_freq, mid)
        sae.save(out / "sae")
        snmf.save(out / "snmf")
        export(sae, out / "sae-saelens", to="saelens")  # sae_lens.SAE.load_from_disk reads it
    print("\nActivations per hook\n" + report.text_table(hook_rows))
    print(f"\nTopK SAE and SNMF on {mid}, evaluated on held-out text (± one standard error over windows)\n"
          + report.text_table(_shown(sae_rows)))
    if concept_rows:
        print(f"\nPlanted concepts in {mid}: the single neuron / SAE / SNMF feature that best detects each family\n"
              + report.text_table([{c: r[c] for c in CONCEPT_COLUMNS} for r in concept_rows]))
    if effect_rows:
        print(f"\nPerturbing {mid} along each kind of direction (saekit eval sensitivity / steering)\n"
              + report.text_table(effect_rows))

    interp_rows, dashboards = describe_features(model, tokens, {"TopK SAE": (sae, out / "sae"),
                                                                "SNMF": (snmf, out / "snmf")}, out / "interp",
                                                dataset=f"{plan.data}:heldout", stages=stages)
    print("\nFeature descriptions on held-out windows (saekit interp; CoSy AUC 0.5 = chance)\n"
          + report.text_table(interp_rows))
    about = (f"{model.cfg.n_layers} layers, d_model {model.cfg.d_model}; held-out loss "
             f"{card.get('heldout_loss', '?')} nats against a unigram baseline of "
             f"{card.get('unigram_heldout_loss', '?')}." if card else
             f"{model_path}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, d_mlp "
             f"{model.cfg.d_mlp}; evaluated on {n:,} held-out tokens of {plan.data!r}.")
    shown = tuple(c for c in SHOWN if any(c in r for r in sae_rows))
    time_rows = stages.rows()  # the report's writing is left out: it is what the times are written into
    sections = [
        Section(name, about),
        Section("Activations per hook", table="hooks"),
        Section(f"TopK SAE and SNMF on {mid} (± one standard error over windows)", table="demo", columns=shown),
        *([Section(f"Planted concepts in {mid}", table="concepts", columns=CONCEPT_COLUMNS)] if concept_rows else []),
        *([Section(f"Sensitivity and steering at {mid}", table="effects")] if effect_rows else []),
        Section("Feature descriptions (saekit interp)", INTERP_TEXT, "interp",
                links=tuple((k, str(p.relative_to(out))) for k, p in dashboards.items())),
        Section("Plots", figures=("activations.png",)),
        Section("Where the time went", f"Seconds per stage of this run, {time_rows[-1]['seconds']:.0f} s in all "
                "(the writing of this report not counted). CPU seconds well below the wall-clock ones mean "
                "other work shared the cores.", "times"),
    ]
    result = Result("demo", sae_rows, {"n_tokens": n, "harvest_seconds": round(dt, 2),
                                       "seconds": time_rows[-1]["seconds"],
                                       "stage_seconds": {r["stage"]: r["seconds"] for r in time_rows}},
                    {"model": str(model_path), "data": plan.data, "plan": dataclasses.asdict(plan), "hooks": hooks,
                     "model_card": card}, {"activations.png": png},
                    tables={"hooks": hook_rows, "concepts": concept_rows, "effects": effect_rows,
                            "interp": interp_rows, "times": time_rows},
                    sections=tuple(sections), title=f"saekit demo: {name}")
    result.save(out)
    print("\nWhere the time went\n" + report.text_table(time_rows))
    print(f"\nwrote {out}/index.html, demo.json, demo.csv (the dictionaries), hooks.csv, interp.csv, times.csv, "
          "report.md, activations.png, sae/, snmf/, sae-saelens/ (strict SAELens layout) "
          f"({stages.total:.0f}s in all)")
    for k, p in dashboards.items():
        print(f"feature dashboard ({k}): {p.resolve()}")
    return result


#: What the interp table shows, under its heading.
INTERP_TEXT = ("Each description kind scored on held-out windows: CoSy AUC 0.5 = chance; the random "
               "columns score another feature's description on the same feature, the bar a real "
               "description must clear. n counts the descriptions scored (PRISM: every cluster label).")


#: Columns of the dictionaries' table a person reads (demo.json and demo.csv keep all).
SHOWN = ("kind", "d_dict", "k", "train tokens", "fit seconds", "FVU ± SE", "L0", "neurons per feature", "dead %",
         "CE rec. zero ± SE", "CE rec. mean ± SE", "KL rec. zero ± SE", "CE clean / spliced")


#: Columns of the concepts table a person reads: each AUROC with its interval.
CONCEPT_COLUMNS = ("family", "tokens", "best neuron", "mean on family", "mean elsewhere", "AUROC ± SE",
                   "best SAE feature AUROC ± SE", "best SNMF feature AUROC ± SE")


def _shown(rows: list[dict]) -> list[dict]:
    return [{c: r[c] for c in SHOWN if c in r} for r in rows]


def _plot(acts: dict, concept_rows: list[dict], sae_freq: torch.Tensor, mid: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3 if concept_rows else 2, figsize=(16 if concept_rows else 11, 3.8))
    norms = {h: x.norm(dim=1).clamp_min(1e-6) for h, x in acts.items()}
    # Log-spaced only when the norms span a factor of 10 or more (a real model's residual
    # stream has rare tokens with 100x the typical norm); the demo LM's fit a linear axis.
    lo, hi = min(float(n.min()) for n in norms.values()), max(float(n.max()) for n in norms.values())
    log = hi / lo >= 10
    bins = (torch.logspace(math.log10(lo), math.log10(hi), 80) if log else torch.linspace(lo, hi, 80)).numpy()
    for h, n in norms.items():
        axes[0].hist(n.numpy(), bins=bins, histtype="step", label=h)
    axes[0].set(xlabel="activation norm per token" + (" (log scale)" if log else ""), ylabel="tokens",
                xscale="log" if log else "linear")
    if log:  # plain numbers, not 3×10⁰ on every minor tick
        axes[0].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    # Legends sit above the axes, under the title: inside, they covered lines and bars.
    axes[0].set_title("Activation norms", pad=34)
    axes[0].legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    if concept_rows:
        fams = [r["family"] for r in concept_rows]
        pos = torch.arange(len(fams)).float()
        for shift, key, label, colour in ((-0.27, "AUROC", "best neuron", "#4c72b0"),
                                          (0.0, "best SAE feature AUROC", "best SAE feature", "#dd8452"),
                                          (0.27, "best SNMF feature AUROC", "best SNMF feature", "#8172b3")):
            axes[1].bar(pos + shift, [r[key] for r in concept_rows], 0.27, label=label, color=colour,
                        yerr=[r[f"{key} ± SE"].se for r in concept_rows], error_kw={"lw": 0.8})
        axes[1].set(ylim=(0.5, 1.02), ylabel="AUROC (± SE)")
        axes[1].set_title(f"Detecting each concept ({mid})", pad=34)
        axes[1].set_xticks(pos.tolist(), fams, rotation=30)
        axes[1].legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    axes[-1].hist(sae_freq.numpy(), bins=50, color="#55a868")
    axes[-1].set(xlabel="log10 firing frequency on held-out text (never fired: -7)", ylabel="SAE features")
    axes[-1].set_title("SAE feature density", pad=34)
    png = report.figure_png(fig)
    plt.close(fig)
    return png


def describe_features(model, tokens: torch.Tensor, dictionaries: dict, out: Path,
                      dataset: str = "demo:heldout", stages: Stages | None = None) -> tuple[list[dict], dict]:
    """``saekit interp`` on each dictionary, small: the 64 most frequent features
    described from the first three quarters of the held-out windows and scored on the
    last quarter, PRISM clusters for 16 of them. Each result is saved under
    ``out/<dictionary directory name>/``. Returns the summary rows (each score a
    :class:`~saekit.report.Stat` with its n, :func:`saekit.demo_report.interp_rows`) and
    the path of each dictionary's dashboard."""
    stages = stages or Stages(say=lambda *a: None)
    cfg = InterpConfig(features="64", prism_features=16, prism_windows=12, llm_features=16)
    describe_tokens, score_tokens = split_tokens(tokens, 3 * len(tokens) // 4)
    rows, dashboards = [], {}
    for label, (d, path) in dictionaries.items():
        with stages(f"interp ({label})"):
            res = interp(model, d, describe_tokens, score_tokens, out / path.name, cfg, name=str(path),
                         dataset=dataset)
            dashboards[label] = res.save(out / path.name) / "index.html"
        rows += interp_rows(label, res)
    return rows, dashboards


#: The perturbation the demo's sensitivity table reads (median norms) and the steering target (KL).
EFFECT_RADIUS, EFFECT_KL = 0.3, 0.25


def perturbation_effects(model, hook: str, sae, snmf) -> list[dict]:
    """A short sensitivity and steering comparison of the two dictionaries' features
    against the baseline directions (small versions of ``eval/sensitivity_demo.toml``
    and ``eval/steering_demo.toml``): per kind of direction, the next-token KL of moving
    every token 0.3 median norms along it; for the dictionaries, KL of splicing the
    reconstruction over KL of a cov-mixture step of the same size (< 1: not
    pathological); and the log-probability gain of a concept's tokens when steering
    along its direction at KL 0.25 (mean over the planted concepts). Each number is a
    :class:`~saekit.report.Stat` with its n (:func:`saekit.demo_report.effect_rows`)."""
    sens = sensitivity.run(sensitivity.Config(hook=hook, dictionaries=[sae, snmf], n_tokens=2048,
                                              radii=[EFFECT_RADIUS], feature_classes=["active"]), model=model)
    steer = steering.run(steering.Config(hook=hook, dictionaries=[sae, snmf], select_by=["output"],
                                         target_kls=[EFFECT_KL], n_random=2, n_new_tokens=8, n_samples=1,
                                         judge=False), model=model)
    directions = {"TopK SAE features": f"{sae.cfg.kind}-{sae.cfg.d_dict}",
                  "SNMF features": f"{snmf.cfg.kind}-{snmf.cfg.d_dict}",
                  "difference in means": "|diffmean/output", "cov-mixture": "cov_mixture|",
                  "isotropic / random": "isotropic|random"}
    return effect_rows(sens, steer, directions, EFFECT_RADIUS, EFFECT_KL)


def train_demo_sae(model, hook: str, heldout_acts: torch.Tensor, heldout_tokens: torch.Tensor,
                   labels: torch.Tensor | None, plan: DemoPlan, stages: Stages | None = None,
                   shipped=None):
    """Fit a TopK SAE and an SNMF on training-split activations of ``hook``; evaluate
    both, and ``shipped`` (a dictionary loaded from disk, e.g. ``checkpoints/demo-topk``)
    when given, on held-out ones, each stage timed by ``stages``. Returns ``(sae, snmf,
    rows, concepts per dictionary, log10 firing frequency of the SAE)``; ``rows`` holds a
    third row for ``shipped``."""
    stages = stages or Stages(say=lambda *a: None)
    with stages("harvest training text"):
        train_tokens = load_tokens(plan.data, model, plan.train_tokens, seed=1)
        train = harvest(model, [hook], train_tokens, batch_size=32)[hook]
    sae_kw = dict(plan.sae)
    if isinstance(sae_kw["d_dict"], float):
        sae_kw["d_dict"] = int(sae_kw["d_dict"] * train.shape[1])
    with stages("fit the TopK SAE"):
        t = time.time()
        sae = fit(train, "topk", hook=hook, model=model, progress=True, **sae_kw)
        sae_s = time.time() - t
    # SNMF (Shafran et al.) on the same activations; on the demo LM each feature keeps 5%
    # of the neurons (the paper's 1% keeps 6 neurons at its width of 512).
    with stages("fit the SNMF"):
        t = time.time()
        snmf = fit(train[:plan.snmf_tokens], "snmf", hook=hook, model=model, progress=True, **plan.snmf)
        snmf_s = time.time() - t
    rows, concepts, freqs = [], [], []
    dicts = [sae, snmf] + ([shipped] if shipped is not None else [])
    with stages("CE/KL recovered"):  # one clean and one ablated pass shared by every dictionary
        recovered = ce_kl_recovered_all(model, dicts, heldout_tokens[:plan.ce_windows])
    with stages("FVU, L0, concepts"):
        for d, secs, n, rec in ((sae, sae_s, len(train), recovered[0]),
                                (snmf, snmf_s, min(len(train), plan.snmf_tokens), recovered[1])):
            row, codes, freq = _evaluate_dictionary(model, d, heldout_acts, heldout_tokens, rec)
            rows.append({"kind": d.cfg.kind, "d_dict": d.cfg.d_dict, "k": d.cfg.k, "train tokens": n,
                         "fit seconds": round(secs, 1), **row})
            concepts.append(concept_table(codes, labels, unit="feature") if labels is not None else [])
            freqs.append(freq)
        if shipped is not None:
            # A dictionary loaded from disk (checkpoints/, made by `make checkpoints`) runs
            # through the same evaluation as the ones just trained.
            row, _, _ = _evaluate_dictionary(model, shipped, heldout_acts, heldout_tokens, recovered[2])
            rows.append({"kind": f"{shipped.cfg.kind} (checkpoints/demo-topk)", "d_dict": shipped.cfg.d_dict,
                         "k": shipped.cfg.k, "train tokens": shipped.cfg.metadata.get("tokens"),
                         "fit seconds": None, **row})
    return sae, snmf, rows, concepts, freqs[0].clamp_min(1e-7).log10().float()


def _evaluate_dictionary(model, d, heldout_acts: torch.Tensor, heldout_tokens: torch.Tensor, rec):
    """FVU (± SE over windows), L0, dead features and CE/KL recovered (``rec``, ± SE) of
    ``d``; the ``± SE`` columns are :class:`~saekit.report.Stat` cells whose n is the
    number of held-out windows."""
    with torch.no_grad():
        stats = StreamingStats()
        codes_all, recon = [], []
        for x in heldout_acts.split(4096):
            codes = d.encode(x)
            x_hat = d.decode(codes)
            stats.update(x, x_hat, d.active(codes))
            codes_all.append(codes)
            recon.append(x_hat)
        codes = torch.cat(codes_all)
    window = token_mask(heldout_tokens, model).nonzero()[:, 0]
    fvu, fvu_se = fvu_with_se(heldout_acts, torch.cat(recon), window)
    freq = stats.firing_frequency()
    nonzero = (d.W_dec != 0).sum(1).float().mean()

    def pm(name: str) -> Stat:
        return Stat(getattr(rec, name), rec.se[name], rec.n_windows)

    row = {"FVU": fvu, "FVU SE": fvu_se, "FVU ± SE": Stat(fvu, fvu_se, int(window.unique().numel())),
           "L0": stats.l0(), "neurons per feature": float(nonzero),
           "dead %": 100 * float((freq == 0).double().mean()),
           "CE recovered (zero abl.)": rec.ce_recovered_zero,
           "CE recovered (mean abl.)": rec.ce_recovered_mean,
           "KL recovered (zero abl.)": rec.kl_recovered_zero,
           "CE rec. zero ± SE": pm("ce_recovered_zero"), "CE rec. mean ± SE": pm("ce_recovered_mean"),
           "KL rec. zero ± SE": pm("kl_recovered_zero"), "windows": rec.n_windows,
           "CE clean / spliced": f"{rec.ce_clean:.3f} / {rec.ce_spliced:.3f}"}
    return row, codes, freq
