"""Benchmark: evaluator forward throughput against a plain batched forward of the same size.

    python eval/bench_evals.py [--windows 16] [--ctx 128] [--variants 16] [--max-rows 64]
                               [--rounds 3] [--out eval/results/bench_evals.json]

Every evaluator stacks many directions × strengths (× windows) along the batch axis, so
one forward pass serves them all. This measures, side by side in interleaved rounds
(medians over rounds), tokens per second of

- ``plain forward``: ``model(tokens)`` on the same number of rows in batches of
  ``max_rows``, no hooks, logits discarded (the bound);
- ``perturbation_kl``: the shared path of the perturbation evaluators: x + δ at a hook
  for every variant, and KL(P‖Q) per token against the clean distribution;
- ``steering``: ``steered_logits``, every row with its own vector at the hook (what
  the KL calibration and generation run);
- ``synthetic``: ``run_trajectories``, (walk, step) rows replacing the last position,
  against a plain forward of the same rows;
- ``stable regions``: ``interpolation_curves`` (pairs × 30 α per forward, stopping at
  the final norm), against a plain forward of the same interpolation rows.

Target (issue 7): every evaluator ≥ 0.8 of the plain forward.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import saekit  # noqa: E402
from saekit.evals.common import clean_log_probs, perturbation_kl  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "demo-lm"))
    ap.add_argument("--hook", default="blocks.2.hook_resid_pre")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--variants", type=int, default=16)
    ap.add_argument("--max-rows", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = saekit.load_model(args.model, device="cpu")
    tokens = saekit.load_tokens("demo:heldout", model, n_tokens=args.windows * args.ctx, ctx_len=args.ctx, seed=0)
    d = saekit.hook_width(model, args.hook)
    deltas = torch.randn(args.variants, *tokens.shape, d)
    clean = clean_log_probs(model, tokens)
    rows = args.variants * len(tokens)
    stacked = tokens.repeat(args.variants, 1)

    @torch.no_grad()
    def plain() -> None:
        for i in range(0, rows, args.max_rows):
            model(stacked[i:i + args.max_rows])

    def perturb() -> None:
        perturbation_kl(model, tokens, args.hook, deltas, clean_logp=clean, max_rows=args.max_rows)

    # stable regions: pairs × n_steps interpolation rows per forward, read after the final norm
    from saekit.evals.interventions import steered_logits
    from saekit.evals.stable_regions import interpolation_curves

    prompts = tokens[:, :16]
    n_steps = 30
    pair_rows = (len(prompts) - 1) * n_steps
    interp_tokens = prompts[:-1].repeat_interleave(n_steps, 0)

    @torch.no_grad()
    def plain_interp() -> None:
        for i in range(0, pair_rows, 2 * n_steps):
            model(interp_tokens[i:i + 2 * n_steps])

    def interp() -> None:
        interpolation_curves(model, prompts, "blocks.0.hook_resid_post", "ln_final.hook_out", n_steps, batch_size=2)

    # steering: every row its own vector at the hook (calibration and generation use this)
    steer_deltas = torch.randn(rows, d)

    def steer() -> None:
        for i in range(0, rows, args.max_rows):
            steered_logits(model, args.hook, stacked[i:i + args.max_rows], steer_deltas[i:i + args.max_rows])

    # synthetic activations: (walk, step) rows at the last position, L2 and KL read-outs
    from saekit.evals.trajectories import run_trajectories, walks

    short = tokens[:, :10]
    g = torch.Generator().manual_seed(0)
    start = torch.randn(len(short), model.cfg.d_model, generator=g)
    walk = walks(torch.arange(len(short)), start, start + 25.0 * torch.randn(len(short), model.cfg.d_model, generator=g),
                 step=0.5, n_steps=50)
    walk_rows = int(walk.n_valid.sum())
    walk_tokens = short[torch.repeat_interleave(walk.prompt, walk.n_valid)]

    def walk_fn() -> None:
        run_trajectories(model, short, walk, "blocks.1.hook_resid_pre", "blocks.3.hook_resid_post", True, 0.5, 50,
                         args.max_rows)

    @torch.no_grad()
    def plain_walk() -> None:
        for i in range(0, walk_rows, args.max_rows):
            model(walk_tokens[i:i + args.max_rows])

    cases = {"plain forward": plain, "perturbation_kl": perturb, "steering (steered_logits)": steer,
             "plain forward, walk rows": plain_walk, "synthetic (run_trajectories)": walk_fn,
             "plain forward, interpolation rows": plain_interp, "stable regions (interpolation_curves)": interp}
    bases = {"perturbation_kl": "plain forward", "steering (steered_logits)": "plain forward",
             "stable regions (interpolation_curves)": "plain forward, interpolation rows",
             "synthetic (run_trajectories)": "plain forward, walk rows"}
    times: dict[str, list[float]] = {k: [] for k in cases}
    plain()  # warm-up
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    n_tok = {k: (pair_rows * prompts.shape[1] if "interp" in k else walk_rows * short.shape[1] if "walk" in k
                 or "trajector" in k else rows * args.ctx) for k in cases}
    med = {k: statistics.median(v) for k, v in times.items()}
    table = [{"case": k, "seconds": med[k], "tokens/s": n_tok[k] / med[k],
              "vs plain forward": med[bases.get(k, k)] / med[k]} for k in cases]
    print(f"{rows} rows x {args.ctx} tokens per case ({args.variants} variants x {len(tokens)} windows), "
          f"{args.max_rows} rows per forward, {torch.get_num_threads()} threads, medians of {args.rounds}")
    print("| case | seconds | tokens/s | vs plain forward |\n|---|---|---|---|")
    for r in table:
        print(f"| {r['case']} | {r['seconds']:.2f} | {r['tokens/s']:,.0f} | {r['vs plain forward']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": f"{platform.machine()}, torch {torch.__version__}, "
                                                   f"{torch.get_num_threads()} threads",
                                        "args": {k: str(v) for k, v in vars(args).items()}, "rows": table},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
