"""Benchmark: harvest throughput against a plain forward of the same model and tokens.

    python eval/bench_harvest.py [--model checkpoints/demo-lm] [--n-tokens 524288] [--repeats 3]

Three timings, interleaved round by round so machine noise hits all of them alike,
reported as medians and as ratios to the plain forward:

- ``forward``: ``model(tokens)`` for every batch, the full model with its unembedding;
- ``harvest``: ``saekit.harvest`` of one mid-layer hook (early stop, BOS masked, copied to CPU);
- ``harvest+cache``: the same stream written to an on-disk cache (sharded safetensors,
  sha256, fsync).

Targets (issue 2): harvest / forward >= 1.0; (harvest+cache) / harvest >= 1 / 1.2. For a
Hugging Face or GGUF model (``--model smollm2-135m``) a fourth case, the plain transformers
model's forward, is the baseline (issue 14: harvest of the middle MLP layer >= 1.5x it).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import saekit  # noqa: E402
from saekit.activations import CacheWriter  # noqa: E402
from saekit.gguf import resolve_model_dir  # noqa: E402
from saekit.models import hook_width, is_native_dir, portable_spec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "checkpoints" / "demo-lm"))
    ap.add_argument("--hook", default=None, help="default: blocks.{n_layers//2}.mlp.hook_post")
    ap.add_argument("--n-tokens", type=int, default=512 * 1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--data", default=None, help="text source (default: demo for native models, else english)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model = saekit.load_model(args.model, device=args.device)
    dev = next(model.parameters()).device
    hook = args.hook or f"blocks.{model.cfg.n_layers // 2}.mlp.hook_post"
    tokens = saekit.load_tokens(args.data or ("demo" if is_native_dir(Path(args.model)) else "english"),
                                model, args.n_tokens)
    n = tokens.numel()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    @torch.inference_mode()
    def forward() -> None:
        for i in range(0, len(tokens), args.batch_size):
            model(tokens[i:i + args.batch_size].to(dev))
        sync()

    def harvest() -> None:
        for _ in saekit.iter_harvest(model, [hook], tokens, args.batch_size, device="cpu"):
            pass
        sync()

    scratch: list[Path] = []

    def harvest_cache() -> None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
        scratch.append(tmp)  # deleted outside the timed region: deleting is not writing
        with CacheWriter(tmp / "cache", {hook: hook_width(model, hook)}, model="bench",
                         processing="native", data="demo") as w:
            for batch in saekit.iter_harvest(model, [hook], tokens, args.batch_size, device="cpu"):
                w.add(batch)
            w.close()

    def cleanup() -> None:
        while scratch:
            shutil.rmtree(scratch.pop(), ignore_errors=True)

    cases = {"forward": forward, "harvest": harvest, "harvest+cache": harvest_cache}
    hf_dir = resolve_model_dir(args.model) or (Path(args.model) if (Path(args.model) / "config.json").is_file()
                                                and not is_native_dir(Path(args.model)) else None)
    if hf_dir is not None:  # the model without TransformerLens: what a user would otherwise run
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).to(dev).eval()

        @torch.inference_mode()
        def transformers_forward() -> None:
            for i in range(0, len(tokens), args.batch_size):
                hf(tokens[i:i + args.batch_size].to(dev))
            sync()

        cases = {"transformers forward": transformers_forward, **cases}
    base = "transformers forward" if hf_dir is not None else "forward"
    for fn in cases.values():  # warm-up
        fn()
    cleanup()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            cleanup()
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [{"case": k, "tokens/s": n / med[k], "ratio to forward": med[base] / med[k]} for k in cases]
    result = {
        "model": portable_spec(args.model), "hook": hook, "tokens": n, "batch_size": args.batch_size,
        "device": str(dev), "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "rows": rows,
        "baseline": base, "harvest_vs_forward": med[base] / med["harvest"],
        "cache_overhead": med["harvest+cache"] / med["harvest"] - 1,
    }
    print(f"harvest benchmark: {n:,} tokens, hook {hook}, batch {args.batch_size}, {dev}, "
          f"median of {args.repeats}")
    print(f"| case | tokens/s | speed vs {base} |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['tokens/s']:,.0f} | {r['ratio to forward']:.2f}x |")
    print(f"harvest/forward = {result['harvest_vs_forward']:.2f} (target >= 1.0); "
          f"cache overhead = {100 * result['cache_overhead']:.1f}% (target <= 20%)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
