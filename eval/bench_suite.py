"""Benchmark: ``saekit eval suite`` on one dictionary of the demo LM, timed part by part,
against a plain forward of the same tokens.

    python eval/bench_suite.py [--dictionary checkpoints/demo-topk] [--n-tokens 16384]
                               [--out eval/results/bench_suite.json]

The suite runs with its defaults (core metrics, sparse probing, TPP, absorption,
sensitivity, steering) in one call, as a user runs it; each part's wall time is read
from a second call per part group (the three concept parts share one harvest, so they
are timed together). ``plain forward`` is ``model(tokens)`` on the suite's ``n_tokens``
in batches of the suite's ``batch_size``, logits discarded: the suite's time in units of
that forward says how many passes over the text its evaluations cost.

Target (issue 20): the whole suite in at most 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import saekit  # noqa: E402
from saekit.evals import run_eval  # noqa: E402
from saekit.evals.suite import Config  # noqa: E402
from saekit.fileio import atomic_write_text  # noqa: E402
from saekit.models import portable_spec  # noqa: E402

GROUPS = (["core"], ["sparse_probing", "tpp", "absorption"], ["sensitivity"], ["steering"])


def plain_forward(model, tokens: torch.Tensor, batch_size: int) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(tokens), batch_size):
            model(tokens[i:i + batch_size], return_type="logits")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dictionary", default="checkpoints/demo-topk")
    ap.add_argument("--model", default="checkpoints/demo-lm")
    ap.add_argument("--n-tokens", type=int, default=Config.n_tokens)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    model = saekit.load_model(args.model)
    cfg = Config(model=args.model, dictionaries=[args.dictionary], n_tokens=args.n_tokens)
    tokens = saekit.load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len, seed=cfg.seed)
    plain_forward(model, tokens[:cfg.batch_size], cfg.batch_size)  # warm-up
    forward_s = plain_forward(model, tokens, cfg.batch_size)
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        t0 = time.perf_counter()
        result = run_eval("suite", cfg, Path(tmp) / "all", model=model)
        total_s = time.perf_counter() - t0
        parts = {}
        for i, group in enumerate(GROUPS):
            t0 = time.perf_counter()
            run_eval("suite", Config(model=args.model, dictionaries=[args.dictionary], n_tokens=args.n_tokens,
                                     parts=group), Path(tmp) / str(i), model=model)
            parts["+".join(group)] = time.perf_counter() - t0
    rows = [{"case": "plain forward", "seconds": forward_s, "forward passes": 1.0},
            *({"case": name, "seconds": s, "forward passes": s / forward_s} for name, s in parts.items()),
            {"case": "whole suite (one call)", "seconds": total_s, "forward passes": total_s / forward_s}]
    print(f"saekit eval suite on {args.dictionary}, {args.model}, {cfg.n_tokens:,} tokens, "
          f"{torch.get_num_threads()} threads")
    print("| case | seconds | in plain forwards of the same tokens |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['seconds']:.1f} | {r['forward passes']:.1f} |")
    print(f"target: whole suite <= 300 s: {'met' if total_s <= 300 else 'missed'} ({total_s:.0f} s)")
    if args.out:
        out = {"dictionary": portable_spec(args.dictionary), "model": portable_spec(args.model),
               "n_tokens": cfg.n_tokens, "threads": torch.get_num_threads(),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "rows": rows,
               "headline": {k: v for k, v in result.rows[0].items() if isinstance(v, (int, float, str))}}
        atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
