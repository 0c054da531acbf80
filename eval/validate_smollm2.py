"""The papers' results on a real model: SmolLM2-135M, at sizes a 2-core CPU allows.

    python eval/validate_smollm2.py [--only sensitivity,stable-regions] [--dicts DIR]

(``make validate`` runs all of it.) Dictionaries come from ``--dicts`` (a directory
with ``sae/`` and ``snmf/``, as ``saekit demo --model smollm2-135m`` writes them), or
are trained here with the demo's settings: a TopK SAE (6,144 features, k 32, fit's
defaults on 150k tokens) and an SNMF (256 features on 1% of the neurons) on
``blocks.15.mlp.hook_post``. Each evaluator runs its recipe ``eval/NAME_smollm2.toml``
with those dictionaries; the headline numbers, each with a standard error (bootstrap
over windows, or over prompt pairs for stable regions), go to
``eval/results/validate_smollm2.json`` and a markdown table beside it, whichever way
they come out. Results of earlier runs of the other evaluators are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import saekit  # noqa: E402
from saekit.fileio import atomic_write_text  # noqa: E402
from saekit.report import json_safe, markdown_table  # noqa: E402

MODEL = "smollm2-135m"
HOOK = "blocks.15.mlp.hook_post"
RESULTS = ROOT / "eval" / "results" / "validate_smollm2.json"
STEPS = ("sensitivity", "stable-regions", "steering", "layers", "synthetic")
#: The hook the synthetic-activation walks perturb (the paper's blocks.1.hook_resid_pre).
SYNTHETIC_HOOK = "blocks.1.hook_resid_pre"
#: The residual-stream SAEs of adjacent layers that the layers step compares.
RESID = ("blocks.15.hook_resid_post", "blocks.16.hook_resid_post")


def train_dictionaries(model, out: Path) -> Path:
    """The demo's SAE and SNMF on ``HOOK`` (skipped when ``out`` has them)."""
    from saekit.demo import REAL_PLAN

    if (out / "sae").is_dir() and (out / "snmf").is_dir():
        return out
    tokens = saekit.load_tokens(REAL_PLAN.data, model, REAL_PLAN.train_tokens, seed=1)
    acts = saekit.harvest(model, [HOOK], tokens, batch_size=32, progress=True)[HOOK]
    sae = saekit.fit(acts, "topk", d_dict=4 * acts.shape[1], k=32, hook=HOOK, model=model, progress=True)
    sae.save(out / "sae")
    snmf = saekit.fit(acts[:REAL_PLAN.snmf_tokens], "snmf", hook=HOOK, model=model, progress=True, **REAL_PLAN.snmf)
    snmf.save(out / "snmf")
    return out


def train_resid_pair(model, out: Path) -> None:
    """TopK SAEs (8x width, k 32, fit's defaults) on the residual stream of two adjacent
    layers, from one harvest (skipped when ``out`` has them)."""
    from saekit.demo import REAL_PLAN

    dirs = resid_dirs(out)
    if all(d.is_dir() for d in dirs):
        return
    tokens = saekit.load_tokens(REAL_PLAN.data, model, REAL_PLAN.train_tokens, seed=1)
    acts = saekit.harvest(model, list(RESID), tokens, batch_size=32, progress=True)
    for h, d in zip(RESID, dirs, strict=True):
        saekit.fit(acts[h], "topk", d_dict=8 * acts[h].shape[1], k=32, hook=h, model=model,
                   progress=True).save(d)


def train_early_resid(model, out: Path) -> Path:
    """A TopK SAE on ``SYNTHETIC_HOOK`` for the synthetic kinds (skipped when present)."""
    from saekit.demo import REAL_PLAN

    path = out / "resid1"
    if not path.is_dir():
        tokens = saekit.load_tokens(REAL_PLAN.data, model, REAL_PLAN.train_tokens, seed=1)
        acts = saekit.harvest(model, [SYNTHETIC_HOOK], tokens, batch_size=32, progress=True)[SYNTHETIC_HOOK]
        saekit.fit(acts, "topk", d_dict=8 * acts.shape[1], k=32, hook=SYNTHETIC_HOOK, model=model,
                   progress=True).save(path)
    return path


def synthetic_rows(result, names: dict[str, str]) -> list[dict]:
    """Plateau length and max-slope step per kind of centre (SE over prompts), KS vs real."""
    return [{"result": "synthetic activations", "quantity": f"{r['metric'].replace('_', ' ')} ({r['readout']} "
             f"read-out), {r['type'].replace('_', ' ')}", "value": r["mean"], "se": r["se"],
             "note": f"KS vs real {r['ks_vs_real']:.2f}, p {r['ks_pvalue']:.2g}"} for r in result.rows]


def resid_dirs(out: Path) -> list[Path]:
    return [out / f"resid{h.split('.')[1]}" for h in RESID]


def steering_rows(result, names: dict[str, str]) -> list[dict]:
    summary, rows = result.summary, []
    for key, v in summary.items():
        if key.endswith(": delta_logprob"):
            rows.append({"result": "steering at matched KL", "quantity": "concept log-prob gain, "
                         + _named(key.removesuffix(": delta_logprob"), names), "value": v,
                         "se": summary.get(key + "_se")})
    return rows


def layer_rows(result, names: dict[str, str]) -> list[dict]:
    """Mean best Pearson and pass-through fraction of live features, SEs over features."""
    s = result.summary
    a, b = (h.split(".")[1] for h in RESID)
    return [{"result": "features across layers", "quantity": f"mean best Pearson, layer {a} -> {b} (resid SAEs)",
             "value": s["mean_best_pearson"], "se": s["mean_best_pearson_se"]},
            {"result": "features across layers", "quantity": f"pass-through fraction (Pearson >= "
             f"{s['pass_through_threshold']}), layer {a} -> {b}", "value": s["pass_through_fraction"],
             "se": s["pass_through_fraction_se"]},
            {"result": "features across layers", "quantity": f"mean best Pearson, layer {b} -> {a}",
             "value": s["mean_best_pearson_backward"], "se": s["mean_best_pearson_backward_se"]}]


def sensitivity_rows(result, names: dict[str, str]) -> list[dict]:
    summary, rows = result.summary, []
    for key, v in summary.items():
        if key.startswith("kl_mean/"):
            what = key.removeprefix("kl_mean/")
            rows.append({"result": "sensitive directions", "quantity": f"KL at r = {summary['reference_radius']} "
                         f"median norms: {_named(what, names)}", "value": v,
                         "se": summary.get(f"kl_mean_se/{what}")})
        if key.startswith("pathology_ratio/"):
            what = key.removeprefix("pathology_ratio/")
            rows.append({"result": "error pathology", "quantity": f"KL(reconstruction) / KL(same-norm step): "
                         f"{_named(what, names)}", "value": v, "se": summary.get(f"pathology_ratio_se/{what}")})
    return rows


def stable_region_rows(result, names: dict[str, str]) -> list[dict]:
    """Median sharpness per model and their ratio, SEs by a bootstrap over prompt pairs."""
    s = result.summary
    models = [k.removesuffix("_sharpness_median") for k in s if k.endswith("_sharpness_median")]
    rows = [{"result": "stable regions", "quantity": f"median sharpness, {m}", "value": s[f"{m}_sharpness_median"],
             "se": s[f"{m}_sharpness_median_se"]} for m in models]
    if "sharpness_ratio" in s:
        rows.append({"result": "stable regions", "quantity": f"sharpness ratio, {' / '.join(models)}",
                     "value": s["sharpness_ratio"], "se": s["sharpness_ratio_se"],
                     "note": f"Mann-Whitney p = {s.get('mannwhitney_p_trained_sharper')}"})
    return rows


ROWS = {"sensitivity": sensitivity_rows, "stable-regions": stable_region_rows, "steering": steering_rows,
        "layers": layer_rows, "synthetic": synthetic_rows}


def _named(key: str, names: dict[str, str]) -> str:
    for path, label in names.items():
        key = key.replace(path, label)
    return key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma-separated subset of {', '.join(STEPS)}")
    ap.add_argument("--dicts", type=Path, default=ROOT / "runs" / "validate-smollm2",
                    help="directory with sae/ and snmf/ (trained here when missing)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table-only", action="store_true", help="only rewrite the markdown table from the JSON")
    args = ap.parse_args()
    if args.table_only:
        return write_table(args.out)
    steps = [s for s in args.only.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise SystemExit(f"unknown step(s) {sorted(unknown)}; choose from {STEPS}")
    torch.manual_seed(0)
    model = saekit.load_model(MODEL, device="cpu")
    dicts = train_dictionaries(model, args.dicts)
    paths = [str(dicts / "sae"), str(dicts / "snmf")]
    names = {}
    for p in paths:
        d = saekit.load_dictionary(p)
        # evaluators name a dictionary by its directory: label it by what it is
        names[Path(p).name + "/"] = (f"TopK SAE ({d.cfg.d_dict}) " if d.cfg.kind == "topk"
                                     else f"SNMF ({d.cfg.d_dict}) ")
    previous = json.loads(args.out.read_text()) if args.out.exists() else {"steps": {}}
    for step in steps:
        t = time.time()
        recipe = ROOT / "eval" / f"{step.replace('-', '_')}_smollm2.toml"
        overrides = [f"dictionaries={json.dumps(paths)}"] if step in ("sensitivity", "steering") else []
        if step == "synthetic":
            overrides = [f"dictionaries={json.dumps([str(train_early_resid(model, args.dicts))])}"]
        if step == "layers":
            train_resid_pair(model, args.dicts)
            overrides = [f"dictionaries={json.dumps([str(d) for d in resid_dirs(args.dicts)])}"]
        result = saekit.evals.run(step, recipe, overrides, model=model, progress=True)
        result.save(ROOT / "runs" / "validate-smollm2" / "eval" / step)
        rows = ROWS[step](result, names)
        previous["steps"][step] = {"rows": rows, "seconds": round(time.time() - t, 1),
                                   "command": f"python eval/validate_smollm2.py --only {step}",
                                   "recipe": str(recipe.relative_to(ROOT)), "date": time.strftime("%Y-%m-%d")}
        print(markdown_table(rows))
    previous.update(model=MODEL, hook=HOOK, torch=torch.__version__, threads=torch.get_num_threads())
    atomic_write_text(args.out, json.dumps(json_safe(previous), indent=2) + "\n")
    write_table(args.out)


def write_table(results: Path) -> None:
    """The markdown table beside the JSON results."""
    steps = json.loads(results.read_text())["steps"]
    table = [{"result": r["result"], "quantity": r["quantity"], "value": f"{r['value']:.4g}",
              "± SE": f"{r['se']:.2g}" if r.get("se") is not None else "-", "command": v["command"]}
             for v in steps.values() for r in v["rows"]]
    atomic_write_text(results.with_suffix(".md"), markdown_table(table) + "\n")
    print(f"wrote {results} and {results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
