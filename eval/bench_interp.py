"""Benchmark of auto-interp's costly steps, each beside its floor, measured side by side.

(a) ``collect`` (the feature store's one streaming pass: top-K windows with contexts,
    uniform samples, token statistics, histograms) against the bare work it wraps: the
    forward pass to the hook plus the dictionary's encode, on the same windows.
(b) MiniLM embedding throughput (windows of 32 tokens per second), the cost that caps
    PRISM clustering and the scoring corpus.

    python eval/bench_interp.py --rounds 3 --out eval/results/bench_interp.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-tokens", type=int, default=65536)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import saekit
    from saekit.interp.prism import embed
    from saekit.interp.store import collect, window_codes
    from saekit.tokenization import token_strings

    model = saekit.load_model(ROOT / "checkpoints" / "demo-lm", device="cpu")
    d = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    tokens = saekit.load_tokens("demo", model, n_tokens=args.n_tokens, seed=0)
    n = int(saekit.token_mask(tokens, model).sum())
    vocab = token_strings(model)
    texts = ["".join(vocab[t] for t in row[1:33].tolist()) for row in tokens[:256]]
    embed(texts[:8])  # load the embedder outside the timings

    def bare() -> None:
        for _ in window_codes(model, d, tokens):
            pass

    def store() -> None:
        collect(model, d, tokens)

    def embedding() -> None:
        embed(texts)

    times: dict[str, list[float]] = {"forward+encode": [], "collect": [], "embed 256 windows": []}
    for _ in range(args.rounds):  # interleaved, so drift hits every path alike
        for name, fn in (("forward+encode", bare), ("collect", store), ("embed 256 windows", embedding)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "tokens": n, "d_dict": d.cfg.d_dict, "rounds": args.rounds, "median_seconds": med,
        "collect_tokens_per_s": n / med["collect"], "bare_tokens_per_s": n / med["forward+encode"],
        "collect_vs_bare_throughput": med["forward+encode"] / med["collect"],
        "embed_windows_per_s": len(texts) / med["embed 256 windows"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
