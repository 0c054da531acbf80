"""Absorption, sparse probing and TPP on a real model: SmolLM2-135M's residual stream.

    python eval/concepts_smollm2.py [--layer 6] [--train-tokens 150000] [--n-tokens 65536]

Three SAEs of one size (8 x 576 = 4,608 latents, k 32, ``saekit.fit``'s defaults) on
``blocks.L.hook_resid_post`` of the English corpus' train split: TopK, BatchTopK and
Matryoshka BatchTopK (kept in ``runs/concepts-smollm2`` and reused). On held-out text:

- **first letter** (Chanin et al.'s task; :mod:`saekit.evals.concept_tasks`): every word
  token labelled by its first letter; sparse probing (k = 1, 5, 20 against the dense
  probe and a random SAE), absorption (false negatives and absorbed share per letter)
  and TPP;
- **source**: English prose against the demo corpus' Python documentation; sparse
  probing and TPP.

Means over letters come with their standard error over letters. Results:
``eval/results/concepts_smollm2.{json,md}``.
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
from saekit.evals import absorption, sparse_probing, tpp  # noqa: E402
from saekit.fileio import atomic_write_text  # noqa: E402
from saekit.metrics.uncertainty import mean_se  # noqa: E402
from saekit.report import json_safe, markdown_table  # noqa: E402

MODEL = "smollm2-135m"
KINDS = ("topk", "batchtopk", "matryoshka_batchtopk")


def train(model, hook: str, n_tokens: int, out: Path, seed: int) -> list[str]:
    paths = [out / kind for kind in KINDS]
    if all((p / "cfg.json").is_file() for p in paths):
        return [str(p) for p in paths]
    tokens = saekit.load_tokens("english", model, n_tokens, seed=seed)
    acts = saekit.harvest(model, [hook], tokens, batch_size=32, progress=True)[hook]
    for kind, path in zip(KINDS, paths, strict=True):
        if not (path / "cfg.json").is_file():
            saekit.fit(acts, kind, d_dict=8 * acts.shape[1], k=32, hook=hook, model=model, seed=seed,
                       progress=True, out=path)
    return [str(p) for p in paths]


def per_concept(rows: list[dict], name: str, key: str, dict_key: str = "dictionary", **match) -> dict:
    vals = [r[key] for r in rows if r.get(dict_key) == name and all(r.get(k) == v for k, v in match.items())]
    return {"mean": sum(vals) / len(vals) if vals else None, "se": mean_se(vals), "n": len(vals)}


def run_task(model, hook: str, dicts: list[str], task: str, n_tokens: int, seed: int) -> dict:
    common = dict(model=MODEL, hook=hook, dictionaries=dicts, data="english:heldout", n_tokens=n_tokens,
                  task=task, seed=seed, batch_size=32, sources=["english:heldout", "demo:heldout"])
    sp_cfg = sparse_probing.Config(**common, k_values=[1, 5, 20])
    prepared = sparse_probing.prepare(sp_cfg, model, progress=True)
    out = {"concepts": len(prepared.splits), "skipped": prepared.skipped, "dictionaries": {}}
    sp = sparse_probing.run(sp_cfg, model, prepared=prepared)
    tp = tpp.run(tpp.Config(**common, n_features=[5, 20]), model, prepared=prepared)
    ab = absorption.run(absorption.Config(**common), model, prepared=prepared) if task == "first_letter" else None
    out["dense"] = per_concept(sp.rows, "dense", "accuracy", "probe")
    for name in [n for n, _ in prepared.dictionaries] + ["random"]:
        r = {f"sparse@{k}": per_concept(sp.rows, name, "accuracy", "probe", k=k) for k in (1, 5, 20)}
        if name != "random":
            r["tpp@20"] = per_concept(tp.rows, name, "tpp", n=20)
            r["tpp@20 random features"] = per_concept(tp.rows, name + "/random", "tpp", n=20)
            if ab is not None:
                r["absorption"] = per_concept(ab.rows, name, "absorption_rate")
                r["false negatives"] = per_concept(ab.rows, name, "false_negative_rate")
        out["dictionaries"][name] = r
    return out


def table(res: dict) -> str:
    rows = []
    for task, t in res["tasks"].items():
        for name, r in t["dictionaries"].items():
            row = {"task": f"{task} ({t['concepts']} concepts)", "dictionary": name,
                   "dense probe": _fmt(t["dense"])}
            row.update({k: _fmt(v) for k, v in r.items()})
            rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return markdown_table([{k: r.get(k, "—") for k in keys} for r in rows])


def _fmt(s: dict) -> str:
    if s["mean"] is None:
        return "—"
    return f"{s['mean']:.3f} ± {s['se']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f} (n=1)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--train-tokens", type=int, default=150_000)
    ap.add_argument("--n-tokens", type=int, default=65_536)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dicts", type=Path, default=ROOT / "runs" / "concepts-smollm2")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "concepts_smollm2.json")
    args = ap.parse_args(argv)
    t0 = time.time()
    model = saekit.load_model(MODEL)
    hook = f"blocks.{args.layer}.hook_resid_post"
    dicts = train(model, hook, args.train_tokens, args.dicts, args.seed)
    res = {"model": MODEL, "hook": hook, "d_dict": 8 * 576, "k": 32, "train_tokens": args.train_tokens,
           "n_tokens": args.n_tokens, "seed": args.seed, "tasks": {}}
    for task in ("first_letter", "source"):
        res["tasks"][task] = run_task(model, hook, dicts, task, args.n_tokens, args.seed)
    res.update(seconds=round(time.time() - t0, 1), machine=f"{platform.machine()}, {torch.get_num_threads()} threads",
               command="python eval/concepts_smollm2.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    md = table(res)
    atomic_write_text(args.out, json.dumps(json_safe(res), indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), f"# Concept evaluations on {MODEL} {hook}\n\n{md}\n\n"
                      f"`{res['command']}` ({res['machine']}, {res['seconds']:.0f} s)\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
