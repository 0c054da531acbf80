"""Benchmark: SNMF's default stopping rule against the Ding–Li–Jordan loop on unseen matrices.

    taskset -c 1 env OMP_NUM_THREADS=1 python eval/bench_snmf_stopping.py --threads 1 \\
        --out eval/results/bench_snmf_stopping.json --md eval/results/bench_snmf_stopping.md
    python eval/bench_snmf_stopping.py --quick          # small matrices, under a minute
    python eval/bench_snmf_stopping.py --dev [--stop-gain G]   # the matrices the default was chosen on

The issue (15, item 2): the default fit should stop when further passes no longer pay,
so that on unseen matrices it reaches the Ding–Li–Jordan ("MU") loop's 200-iteration
error at least 4× faster. For each matrix below and each ``wta_fraction`` (1.0, plain
semi-NMF, and 0.01, the default), one run of each, side by side:

- ``MU loop``: ``fit_snmf(A, k, wta_fraction=p, solver="mu", init="random",
  max_iter=200, patience=10**9, stop_gain=0, encode_iter=1)``; ``e_200`` is its pass-200
  error and its time is initialisation plus 200 passes (``encode_iter=1`` skips the
  final polish, as in ``eval/bench_snmf.py``);
- ``saekit defaults``: ``fit_snmf(A, k, wta_fraction=p)``, timed as the whole call
  (initialisation, passes, final NNLS polish): its error is the returned dictionary's
  (``cfg.metadata["rel_error"]``, what ``encode`` reproduces), and the pass where it
  stopped and why (``metadata["stopped"]``) are reported, with the pass at which the
  same fit first reached ``e_200`` (from ``history``) and the time to get there
  (initialisation plus passes, no polish);
- ``old rule`` (unless ``--no-old``): the same call with ``stop_gain=0``, the fitter's
  behaviour before the rule (``patience`` passes improving by less than ``tol``).

Target: saekit's error <= ``e_200`` and whole-call speed-up >= 4× on every row.

The matrices (``MATRICES``). The default ``stop_gain`` was chosen on other ones,
seed 101 of the same generators at their default settings (``--dev``). A first run
of this benchmark then showed the elasticity alone stopping ``lowrank`` s9 at wta
0.01 at pass 10, while it still crept from its initialisation, which led to the
rule's second condition (``GAIN_SHARE`` in ``saekit/training/snmf.py``); so that row
informed the rule, and the four seed-21 matrices were added afterwards, unseen by
any choice:

- ``mlp``: ``eval/bench_snmf.py``'s ``mlp_like``, ``gelu((C D)/σ + noise·N)``: sparse
  non-negative feature activations ``C`` through Gaussian signed directions ``D``, a
  GELU, half the entries negative; varied seeds, feature counts, firing rates, noise;
- ``lowrank``: a Gaussian rank-``r`` factor with a power-law spectrum (variance of
  component i ∝ i^-decay), rotated, plus isotropic noise: dense, signed, with a slowly
  decaying spectrum and no sparse structure;
- ``resid``: residual-stream-like: sparse non-negative codes over ``2·d`` signed
  directions, rows scaled by a heavy-tailed factor (Exp(1)^1.5 + 0.2, so a few tokens
  have many times the typical norm), and four outlier dimensions carrying a large
  offset (30× a typical entry), as the massive activations of real residual streams;
- ``sparse``: ``C D + noise``, uniform sparse non-negative codes (5% non-zero) times
  unit-norm signed directions, plus 5% Gaussian noise: a semi-NMF with a planted answer.

Times are wall-clock seconds of one run each on the machine recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_snmf import mlp_like, svd_bound  # noqa: E402
from bench_snmf import timed_fit as run  # noqa: E402

# -- matrices ---------------------------------------------------------------------------


def gen_mlp(n: int, d: int, seed: int, features: int | None = None, p: float = 0.02,
            noise: float = 0.38) -> torch.Tensor:
    return mlp_like(0, n, d, seed=seed, features=features or d // 2, p=p, noise=noise)


def gen_lowrank(n: int, d: int, seed: int, rank: int | None = None, decay: float = 1.0,
                noise: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = rank or d // 2
    scale = torch.arange(1, r + 1, dtype=torch.float32).pow(-decay / 2)
    U = torch.randn(n, r, generator=g) * scale
    V = torch.linalg.qr(torch.randn(d, r, generator=g))[0].T
    A = U @ V
    return A / A.std() + noise * torch.randn(n, d, generator=g)


def gen_resid(n: int, d: int, seed: int, features: int | None = None, p: float = 0.03,
              outliers: int = 4, offset: float = 30.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = features or 2 * d
    D = torch.randn(m, d, generator=g) / math.sqrt(d)
    C = (torch.rand(n, m, generator=g) < p) * torch.empty(n, m).exponential_(1.0, generator=g)
    X = C @ D + 0.05 * torch.randn(n, d, generator=g)
    X = X / X.std()
    X = X * (torch.empty(n).exponential_(1.0, generator=g) ** 1.5 + 0.2)[:, None]
    dims = torch.randperm(d, generator=g)[:outliers]
    X[:, dims] = 0.1 * offset * X[:, dims] + offset * (1 + 0.1 * torch.randn(n, outliers, generator=g))
    return X


def gen_sparse(n: int, d: int, seed: int, features: int | None = None, p: float = 0.05,
               noise: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = features or d
    D = torch.randn(m, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    C = (torch.rand(n, m, generator=g) < p) * torch.rand(n, m, generator=g)
    A = C @ D
    return A + noise * A.std() * torch.randn(n, d, generator=g)


GENERATORS = {"mlp": gen_mlp, "lowrank": gen_lowrank, "resid": gen_resid, "sparse": gen_sparse}

#: (class, n, d_in, d_dict, seed, generator settings)
MATRICES = [
    ("mlp", 10_000, 512, 128, 7, {}),
    ("mlp", 20_000, 768, 256, 8, {"features": 512, "p": 0.015, "noise": 0.3}),
    ("mlp", 5_000, 256, 64, 9, {"features": 96, "noise": 0.5}),
    ("lowrank", 10_000, 512, 128, 7, {}),
    ("lowrank", 5_000, 256, 64, 9, {"decay": 1.5, "noise": 0.2}),
    ("resid", 10_000, 512, 128, 7, {}),
    ("resid", 20_000, 768, 256, 8, {"outliers": 6, "p": 0.02}),
    ("sparse", 10_000, 512, 128, 7, {}),
    ("sparse", 5_000, 256, 64, 9, {"features": 128, "p": 0.08, "noise": 0.1}),
    ("mlp", 10_000, 512, 128, 21, {"features": 384, "p": 0.01, "noise": 0.45}),
    ("lowrank", 10_000, 384, 96, 21, {"decay": 0.7}),
    ("resid", 8_000, 384, 96, 21, {"outliers": 2, "offset": 60.0}),
    ("sparse", 8_000, 384, 96, 21, {"features": 256, "p": 0.03}),
]
#: The matrices the default ``stop_gain`` was chosen on (``--dev``): seed 101, default settings.
DEV = [(cls, n, d, k, 101, {}) for cls in ("mlp", "lowrank", "resid", "sparse")
       for n, d, k in ((5_000, 256, 64), (10_000, 512, 128))]
QUICK = [
    ("mlp", 3_000, 192, 48, 7, {}),
    ("lowrank", 3_000, 192, 48, 7, {}),
    ("resid", 3_000, 192, 48, 7, {}),
    ("sparse", 3_000, 192, 48, 7, {}),
]


# -- runs ----------------------------------------------------------------------------------


def bench_one(cls: str, n: int, d: int, k: int, seed: int, settings: dict, wta: float, old: bool,
              mu_iters: int, **saekit_kw) -> dict:
    A = GENERATORS[cls](n, d, seed, **settings)
    mu = run(A, k, wta_fraction=wta, solver="mu", init="random", max_iter=mu_iters, patience=10**9,
             stop_gain=0, encode_iter=1)
    e200 = mu["history"][-1]["rel_error"]
    t_mu = mu["init"] + mu["loop"]
    s = run(A, k, wta_fraction=wta, **saekit_kw)
    hit = next((h for h in s["history"] if h["rel_error"] <= e200), None)
    row = {
        "matrix": cls, "n": n, "d_in": d, "d_dict": k, "seed": seed, "settings": settings, "wta_fraction": wta,
        "svd_bound": svd_bound(A, k), "e_200": e200, "mu_seconds": t_mu,
        "mu_seconds_per_pass": (mu["loop"] - mu["history"][0]["seconds"]) / max(mu["passes"] - 1, 1),
        "saekit_rel_error": s["final_rel_error"], "saekit_seconds": s["total"], "saekit_init_seconds": s["init"],
        "saekit_polish_seconds": max(s["total"] - s["init"] - s["loop"], 0.0),
        "saekit_stop_pass": s["iterations"], "saekit_stopped": s["stopped"], "saekit_gain_at_stop": s["gain"],
        "saekit_seconds_per_pass": (s["loop"] - s["history"][0]["seconds"]) / max(s["passes"] - 1, 1),
        "saekit_last_pass_rel_error": s["history"][-1]["rel_error"],
        "hit_pass": hit and hit["iter"], "hit_seconds": hit and s["init"] + hit["seconds"],
        "speedup": t_mu / s["total"],
        "speedup_to_hit": hit and t_mu / (s["init"] + hit["seconds"]),
    }
    row["met"] = bool(row["saekit_rel_error"] <= e200 and row["speedup"] >= 4)
    row["saekit_curve"] = [[h["iter"], round(h["rel_error"], 6), round(h["seconds"], 4),
                            None if h.get("gain") is None else round(h["gain"], 5)] for h in s["history"]]
    if old:
        o = run(A, k, wta_fraction=wta, stop_gain=0)
        row.update({"old_rel_error": o["final_rel_error"], "old_seconds": o["total"], "old_stop_pass": o["iterations"],
                    "old_stopped": o["stopped"], "old_speedup": t_mu / o["total"]})
    return row


def fmt(v, spec: str, unit: str = "") -> str:
    return "–" if v is None else format(v, spec) + unit


def table(rows: list[dict], old: bool) -> str:
    head = ("| matrix | n × d, k | wta | e_200 (MU) | MU s | saekit error | saekit s | speed-up | stop pass "
            "(why) | reaches e_200 at pass (s, ×) |" + (" old rule: error, s, passes |" if old else "") + " met |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(
            f"| {r['matrix']} s{r['seed']} | {r['n']:,} × {r['d_in']}, {r['d_dict']} | {r['wta_fraction']:g} | "
            f"{r['e_200']:.4f} | {r['mu_seconds']:.2f} | {r['saekit_rel_error']:.4f} | {r['saekit_seconds']:.2f} | "
            f"{r['speedup']:.1f}× | {r['saekit_stop_pass']} ({r['saekit_stopped']}) | "
            f"{fmt(r['hit_pass'], 'd')} ({fmt(r['hit_seconds'], '.2f')}, {fmt(r['speedup_to_hit'], '.1f', '×')}) |"
            + (f" {r['old_rel_error']:.4f}, {r['old_seconds']:.2f}, {r['old_stop_pass']} ({r['old_stopped']}) |"
               if old else "")
            + f" {'yes' if r['met'] else 'no'} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four small matrices: under a minute")
    ap.add_argument("--wta", type=float, nargs="+", default=[1.0, 0.01])
    ap.add_argument("--only", nargs="+", default=None, help="matrix classes to run")
    ap.add_argument("--dev", action="store_true", help="the matrices the default stop_gain was chosen on")
    ap.add_argument("--stop-gain", type=float, default=None, help="override saekit's stop_gain (default: its own)")
    ap.add_argument("--no-old", action="store_true", help="skip the old-rule (stop_gain=0) runs")
    ap.add_argument("--mu-iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mats = QUICK if args.quick else DEV if args.dev else MATRICES
    if args.only:
        mats = [m for m in mats if m[0] in args.only]
    old = not args.no_old
    from saekit.dictionaries.snmf import SNMF

    o = SNMF.OPTIONS
    defaults = {k: o[k] for k in ("solver", "init", "max_iter", "tol", "patience", "stop_gain", "code_steps")}
    print(f"saekit defaults {defaults}; {torch.get_num_threads()} threads", flush=True)
    rows = []
    t0 = time.perf_counter()
    for wta in args.wta:
        for cls, n, d, k, seed, settings in mats:
            kw = {} if args.stop_gain is None else {"stop_gain": args.stop_gain}
            r = bench_one(cls, n, d, k, seed, settings, wta, old, args.mu_iters, **kw)
            rows.append(r)
            print(f"{cls} s{seed} {n}x{d} k{k} wta {wta:g}: MU e_200 {r['e_200']:.4f} in {r['mu_seconds']:.2f} s | "
                  f"saekit {r['saekit_rel_error']:.4f} in {r['saekit_seconds']:.2f} s ({r['speedup']:.1f}x), "
                  f"stopped at pass {r['saekit_stop_pass']} ({r['saekit_stopped']}), e_200 at pass "
                  f"{r['hit_pass']} | " + (f"old rule {r['old_rel_error']:.4f} in {r['old_seconds']:.2f} s "
                                           f"({r['old_stop_pass']} passes) | " if old else "")
                  + ("met" if r["met"] else "NOT met"), flush=True)
    md = table(rows, old)
    met = sum(r["met"] for r in rows)
    summary = (f"{met} of {len(rows)} rows meet the target (error <= e_200 and >= 4x faster, whole call); "
               f"median speed-up {sorted(r['speedup'] for r in rows)[len(rows) // 2]:.1f}x, "
               f"min {min(r['speedup'] for r in rows):.1f}x; {time.perf_counter() - t0:.0f} s in all")
    print("\n" + md + "\n\n" + summary)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "args": vars(args), "saekit_defaults": defaults,
                                              "summary": summary, "rows": rows}, indent=1) + "\n")
    if args.md:
        cmd = "python eval/bench_snmf_stopping.py " + " ".join(sys.argv[1:])
        Path(args.md).write_text(
            f"# SNMF default stopping vs the Ding–Li–Jordan loop (200 passes)\n\n"
            f"`{cmd}` on {machine}; saekit defaults {defaults}.\n\n"
            f"Columns: e_200 is the MU loop's pass-200 error and MU s its time (init + 200 passes); saekit's "
            f"error and seconds are the default call's (init, passes, final NNLS polish); speed-up = MU s / "
            f"saekit s; 'reaches e_200' is the first pass of the same default fit at or below e_200, with the "
            f"time to it (init + passes) and the speed-up that would give.\n\n{md}\n\n{summary}\n")


if __name__ == "__main__":
    main()
