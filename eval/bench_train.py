"""Benchmark: TopK SAE training throughput against the encoder-matmul bound.

    python eval/bench_train.py [--d-in 512] [--d-dict 8192] [--k 32] [--batch 2048] [--device cpu]

Measured side by side in one run:

- ``bound``: tokens/s if a step cost only the dense encoder matmul, 2·batch·d_in·d_dict
  FLOP at the fp32 matmul rate measured here;
- ``step (sparse)``: one training step (forward, backward, Adam) with saekit's sparse
  kernels, ``TopKSAE.train_step``;
- ``step (dense)``: the same step through dense autograd (``train_step_dense``);
- ``saekit.fit``: a whole ``fit`` pass over in-memory data (batching, scaling, dead
  tracking, decoder renormalisation included).

Target (issue 3): the sparse step and the ``fit`` pass reach at least 60% of the bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import saekit  # noqa: E402
from saekit.dictionaries import REGISTRY, DictionaryConfig  # noqa: E402


def timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-dict", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10, help="timed repeats of one step")
    ap.add_argument("--fit-batches", type=int, default=20, help="batches in the fit pass")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    B, d, n, k = args.batch, args.d_in, args.d_dict, args.k
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, d, generator=g).to(dev, dtype)
    W = torch.randn(d, n, generator=g).to(dev, dtype)

    t_mm = timed(lambda: x @ W, args.steps, sync)
    bound = B / t_mm
    rows = [{"case": "encoder matmul bound", "tokens/s": bound, "of bound": 1.0}]

    for path in ("train_step", "train_step_dense"):
        sae = REGISTRY["topk"](DictionaryConfig(kind="topk", d_in=d, d_dict=n, k=k)).to(dev, dtype)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)
        dead = torch.zeros(n, dtype=torch.bool, device=dev)

        def step(sae=sae, opt=opt, path=path, dead=dead):
            out = getattr(sae, path)(x, 0, dead=dead)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        t = timed(step, args.steps, sync)
        name = "one step, sparse kernels" if path == "train_step" else "one step, dense autograd"
        rows.append({"case": name, "tokens/s": B / t, "of bound": B / t / bound})

    data = torch.randn(B * args.fit_batches, d, generator=g).to(dtype)
    saekit.fit(data[: 2 * B], "topk", d_dict=n, k=k, batch_size=B, device=dev)  # warm-up
    sync()
    t = time.perf_counter()
    saekit.fit(data, "topk", d_dict=n, k=k, batch_size=B, device=dev)
    sync()
    t = time.perf_counter() - t
    rows.append({"case": f"saekit.fit pass ({len(data):,} tokens)", "tokens/s": len(data) / t,
                 "of bound": len(data) / t / bound})

    print(f"TopK training, d_in={d}, d_dict={n}, k={k}, batch={B}, {dev}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; matmul rate {2 * B * d * n / t_mm / 1e9:.1f} GFLOP/s")
    print("| case | tokens/s | of bound |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['tokens/s']:,.0f} | {100 * r['of bound']:.0f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
