"""Benchmark: semi-NMF fitting speed against the Ding–Li–Jordan loop and overcomplete, and streaming memory.

    python eval/bench_snmf.py [--quick] [--rounds 3] [--peers .venv-peers/bin/python] [--out FILE]
    python eval/bench_snmf.py --only a|b ...

(a) Time to a fixed error. A deterministic 20,000 × 1024 matrix of signed, MLP-like
activations (``mlp_like`` below), d_dict = 256, wta_fraction = 1.0 (plain semi-NMF):

- ``MU loop``: ``fit_snmf(A, 256, wta_fraction=1.0, solver="mu", init="random",
  max_iter=200, patience=10**9, stop_gain=0)``, the paper's loop; its pass-200 error
  is ``e_200``;
- saekit's fast paths, ``solver="hals"`` (default) and ``"apg"``, init ``"kmeans"``
  (default) and ``"svd"``: the first pass whose error is <= ``e_200`` (found once from
  ``history``), then a timed ``fit_snmf(..., max_iter=that pass, patience=10**9,
  stop_gain=0)`` per round (every fit here runs a fixed number of passes: the
  default stopping rule is measured by ``eval/bench_snmf_stopping.py``);
- ``overcomplete`` 0.3.0 ``SemiNMF(256, solver="mu", tol=0).fit(A, max_iter=200)`` in
  the peer environment (a subprocess reading the same matrix from a safetensors file),
  plus, once, the same update step traced iteration by iteration to find where it
  reaches ``e_200`` (error evaluation outside the timed region).

Times are wall-clock seconds. For saekit, "to e_200" is initialisation plus the
passes up to the hit (from ``history``, which counts from after initialisation, plus
the initialisation measured as call time minus ``fit_seconds``); "whole call" adds
the final NNLS polish ``fit_snmf`` runs on the best dictionary before returning
(``encode_iter``/``encode_tol``), which is what a caller pays. The MU loop row is run
with ``encode_iter=1`` so that its polish (minutes after 200 MU passes) is skipped:
its time is initialisation plus 200 passes. Rounds are interleaved (MU, saekit
variants, overcomplete, MU, ...) and the table reports medians. Target (issue): at
least 4× faster than the MU loop to the same error.

The matrix (``mlp_like``): ``A = gelu((C D)/σ + 0.38·N)``, a toy model of features in
superposition: ``C [n, 256]`` sparse non-negative feature activations (each non-zero
with probability 0.02, about five per token, Exp(1) magnitudes), ``D [256, 1024]``
Gaussian signed feature directions, ``σ = sqrt(2·0.02·256)`` the analytic standard
deviation of ``C D``, ``N`` standard Gaussian noise. Half of the entries are negative
(GELU's small negative lobe). Rows come in seeded blocks of 16,384, so any prefix of
the stream is reproducible and (b) streams the same distribution. Its rank-256 SVD
bound ‖A − A_256‖_F/‖A‖_F for 20,000 rows is 0.3968 (printed and stored on every run
as ``svd_bound``). The noise level was tuned to put the bound at the issue's 0.3965;
the structure (sparse non-negative codes, noise for the rest) was chosen so that 200
MU passes end close to the bound (1.2% above it in trials), as in the issue (0.399 vs
0.3965). Matrices with a slowly decaying spectrum (a low-rank Gaussian pre-activation,
or Zipf-distributed feature frequencies) leave the MU loop 2.5–14% above the bound
after 200 passes, which would make its error easy to reach.

(b) Streaming. A 10⁶ × 1024 bf16 cache of the same distribution is written with
``CacheWriter`` block by block (never held whole), then a subprocess runs
``fit_snmf(cache, 256, wta_fraction=0.01, codes="memmap", chunk_tokens=65536,
max_iter=--stream-passes)`` while this process polls its ``/proc/PID/status`` every
50 ms for ``RssAnon`` (anonymous memory: the memory-mapped cache and code files are
file-backed and not counted; ``VmHWM`` would count them). Reported: peak RssAnon,
seconds per pass, initialisation and polish time, and disk used (cache + code map).
Target (issue): peak anonymous RSS < 2 GB. With a GPU (``--device cuda``) the issue
asks for the same at 10⁷ tokens (``--stream-tokens 10000000``).

``--quick``: small sizes (a smoke run of well under a minute).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCK = 16384
HOOK = "blocks.0.mlp.hook_post"


# -- data ----------------------------------------------------------------------------

def mlp_like(lo: int, hi: int, d: int = 1024, *, seed: int = 0, features: int = 256, p: float = 0.02,
             noise: float = 0.38) -> torch.Tensor:
    """Rows ``lo:hi`` of the seeded stream of MLP-like activations (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(features, d, generator=g)
    sigma = math.sqrt(2 * p * features)  # std of (C D)_ij: E[c²] = 2p for c ~ Bernoulli(p)·Exp(1)
    out = []
    for b in range(lo // BLOCK, (hi - 1) // BLOCK + 1):
        gb = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (b + 1))
        C = (torch.rand(BLOCK, features, generator=gb) < p) * torch.empty(BLOCK, features).exponential_(
            1.0, generator=gb)
        Z = (C @ D) / sigma + noise * torch.randn(BLOCK, d, generator=gb)
        a, z = max(lo, b * BLOCK), min(hi, (b + 1) * BLOCK)
        out.append(torch.nn.functional.gelu(Z[a - b * BLOCK:z - b * BLOCK]))
    return torch.cat(out)


def svd_bound(A: torch.Tensor, r: int) -> float:
    """‖A − A_r‖_F / ‖A‖_F from the eigenvalues of AᵀA (float64)."""
    ev = torch.linalg.eigvalsh(A.T.double() @ A.double()).flip(0).clamp_min(0)
    return math.sqrt(float(1 - ev[:r].sum() / ev.sum()))


def default_peers() -> str | None:
    p = ROOT / ".venv-peers" / "bin" / "python"
    return str(p) if p.exists() else None


def run_peer(python: str, args: list[str], timeout: float = 3600) -> dict:
    """Run ``eval/peers/<script>`` with the peer interpreter; its last stdout line is JSON."""
    env = {**os.environ, "PYTHONPATH": ""}  # never let saekit's tree leak into the peer venv
    r = subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"peer {' '.join(args[:2])} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- (a) time to a fixed error ---------------------------------------------------------

def timed_fit(A: torch.Tensor, d_dict: int, **kw) -> dict:
    from saekit.training.snmf import fit_snmf

    h: list[dict] = []
    t = time.perf_counter()
    d = fit_snmf(A, d_dict, history=h, **kw)
    total = time.perf_counter() - t
    md = d.cfg.metadata
    init = max(total - md["fit_seconds"], 0.0)
    return {"history": h, "total": total, "init": init, "loop": h[-1]["seconds"] if h else 0.0,
            "polish": max(md["fit_seconds"] - (h[-1]["seconds"] if h else 0.0), 0.0),
            "final_rel_error": md["rel_error"], "passes": len(h), "stopped": md["stopped"],
            "gain": md["gain"], "iterations": md["iterations"]}


def bench_fixed_error(args, tmp: Path) -> dict:
    n, d, k = args.n, args.d, args.d_dict
    A = mlp_like(0, n, d)
    bound = svd_bound(A, k)
    neg = float((A < 0).float().mean())
    print(f"(a) matrix {n:,} x {d}, d_dict {k}: rank-{k} SVD bound {bound:.4f}, {100 * neg:.0f}% negative; "
          f"{torch.get_num_threads()} threads", flush=True)
    from safetensors.torch import save_file

    mat = tmp / "A.safetensors"
    save_file({"A": A.contiguous()}, str(mat))
    peers = None if args.peers in ("", "none") else args.peers

    variants = [(s, i) for s in ("hals", "apg") for i in ("kmeans", "svd")]
    mu_kw = dict(wta_fraction=1.0, solver="mu", init="random", max_iter=args.mu_iters, patience=10**9,
                 stop_gain=0, encode_iter=1, seed=args.seed)
    mu_runs, fast_runs, oc_runs = [], {v: [] for v in variants}, []
    e_target, hit, trace = None, {}, None
    for rnd in range(args.rounds):
        r = timed_fit(A, k, **mu_kw)
        mu_runs.append(r)
        print(f"  round {rnd + 1}: MU loop {r['passes']} passes, error {r['history'][-1]['rel_error']:.4f}, "
              f"{r['init'] + r['loop']:.1f} s", flush=True)
        if e_target is None:
            e_target = r["history"][-1]["rel_error"]
            for v in variants:  # find the first pass at or below e_200 (once)
                s, i = v
                # A fit is deterministic for a seed, so a longer run repeats a shorter one's
                # passes: try a few pass budgets rather than always running mu_iters passes.
                for cap in sorted({min(c, args.mu_iters) for c in (25, 75, args.mu_iters)}):
                    x = timed_fit(A, k, wta_fraction=1.0, solver=s, init=i, max_iter=cap,
                                  stop_gain=0, encode_iter=1, seed=args.seed)
                    p = next((h["iter"] for h in x["history"] if h["rel_error"] <= e_target), None)
                    if p is not None or x["passes"] < cap:  # reached, or stopped by patience
                        break
                hit[v] = {"pass": p, "best": min(h["rel_error"] for h in x["history"]),
                          "passes_run": x["passes"]}
                print(f"    {s}/{i}: reaches {e_target:.4f} at pass {p} "
                      f"(best {hit[v]['best']:.4f} in {x['passes']} passes)", flush=True)
        for v in variants:
            s, i = v
            p = hit[v]["pass"]
            if p is None:
                continue
            x = timed_fit(A, k, wta_fraction=1.0, solver=s, init=i, max_iter=p, patience=10**9, stop_gain=0,
                          seed=args.seed)
            fast_runs[v].append(x)
            print(f"    {s}/{i}: {p} passes, error {x['history'][-1]['rel_error']:.4f}, to e_200 "
                  f"{x['init'] + x['loop']:.1f} s, whole call {x['total']:.1f} s", flush=True)
        if peers:
            o = run_peer(peers, [str(ROOT / "eval/peers/bench_snmf_peer.py"), "--data", str(mat),
                                 "--d-dict", str(k), "--iters", str(args.mu_iters), "--mode", "fit",
                                 "--seed", str(args.seed), "--threads", str(torch.get_num_threads())])
            oc_runs.append(o)
            print(f"    overcomplete fit: {o['iters']} iterations, error {o['rel_error']:.4f}, "
                  f"{o['seconds']:.1f} s", flush=True)
            if trace is None:
                trace = run_peer(peers, [str(ROOT / "eval/peers/bench_snmf_peer.py"), "--data", str(mat),
                                         "--d-dict", str(k), "--iters", str(args.mu_iters), "--mode", "trace",
                                         "--target", repr(e_target), "--seed", str(args.seed),
                                         "--threads", str(torch.get_num_threads())])
                print(f"    overcomplete trace: reaches {e_target:.4f} at iteration {trace['hit_iter']} "
                      f"({trace['hit_seconds']} s of steps); {trace['iters']} iterations -> "
                      f"{trace['rel_error']:.4f}", flush=True)

    med = statistics.median
    mu_t = med(r["init"] + r["loop"] for r in mu_runs)
    rows = [{"method": f"MU loop (fit_snmf solver=mu, init=random), {args.mu_iters} passes",
             "passes": args.mu_iters, "rel_error": med(r["history"][-1]["rel_error"] for r in mu_runs),
             "seconds": mu_t, "whole_call_seconds": None, "speedup": 1.0, "init_seconds": med(r["init"] for r in mu_runs)}]
    for v in variants:
        s, i = v
        runs = fast_runs[v]
        if not runs:
            rows.append({"method": f"saekit solver={s}, init={i}", "passes": None, "rel_error": hit[v]["best"],
                         "seconds": None, "whole_call_seconds": None, "speedup": None,
                         "note": f"did not reach e_200 in {hit[v]['passes_run']} passes"})
            continue
        t = med(x["init"] + x["loop"] for x in runs)
        rows.append({"method": f"saekit solver={s}, init={i}", "passes": hit[v]["pass"],
                     "rel_error": med(x["history"][-1]["rel_error"] for x in runs), "seconds": t,
                     "whole_call_seconds": med(x["total"] for x in runs), "speedup": mu_t / t,
                     "speedup_whole_call": mu_t / med(x["total"] for x in runs),
                     "init_seconds": med(x["init"] for x in runs), "polish_seconds": med(x["polish"] for x in runs),
                     "rel_error_after_polish": med(x["final_rel_error"] for x in runs)})
    if oc_runs:
        t = med(o["seconds"] for o in oc_runs)
        rows.append({"method": f"overcomplete {oc_runs[0]['version']} SemiNMF(solver=mu, tol=0).fit, "
                               f"{args.mu_iters} iterations", "passes": oc_runs[0]["iters"],
                     "rel_error": med(o["rel_error"] for o in oc_runs), "seconds": t, "whole_call_seconds": t,
                     "speedup": mu_t / t})
    if trace is not None:
        ht = trace["hit_seconds"]
        rows.append({"method": f"overcomplete {trace['version']} MU step, traced to e_200",
                     "passes": trace["hit_iter"], "rel_error": trace["hit_rel_error"], "seconds": ht,
                     "whole_call_seconds": None, "speedup": None if ht is None else mu_t / ht,
                     "note": None if ht is not None else
                     f"not reached in {trace['iters']} iterations (best {trace['best_rel_error']:.4f})"})
    return {"n": n, "d_in": d, "d_dict": k, "svd_bound": bound, "negative_fraction": neg, "e_200": e_target,
            "mu_iters": args.mu_iters, "rounds": args.rounds, "rows": rows,
            "runs": {"mu": [_brief(r) for r in mu_runs],
                     **{f"{s}/{i}": [_brief(x) for x in fast_runs[(s, i)]] for s, i in variants},
                     "overcomplete_fit": oc_runs, "overcomplete_trace": _trim_trace(trace)}}


def _brief(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "history"} | {
        "last": r["history"][-1] if r["history"] else None}


def _trim_trace(t: dict | None) -> dict | None:
    if t is None:
        return None
    return {k: v for k, v in t.items() if k != "errors"} | {"errors_every_10": t.get("errors", [])[::10]}


# -- (b) streaming ------------------------------------------------------------------------

def write_cache(path: Path, n: int, d: int, dtype: torch.dtype) -> float:
    from saekit.activations import CacheWriter

    t = time.perf_counter()
    with CacheWriter(path, {HOOK: d}, model="synthetic-mlp-like", processing="native",
                     data="eval/bench_snmf.py mlp_like(seed=0)", dtype=dtype) as w:
        for lo in range(0, n, BLOCK):
            w.add({HOOK: mlp_like(lo, min(lo + BLOCK, n), d)})
    return time.perf_counter() - t


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM", "VmRSS"):
                out[key] = int(val.split()[0]) * 1024
    return out


def stream_child(args) -> None:
    """Run in the subprocess: the streaming fit, reporting JSON on the last stdout line."""
    from saekit.training.snmf import fit_snmf

    h: list[dict] = []
    marks: list[float] = []  # time.monotonic() (system-wide) of each history record, for the parent
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            while len(marks) < len(h):
                marks.append(time.monotonic())

    threading.Thread(target=watch, daemon=True).start()
    start = time.monotonic()
    t = time.perf_counter()
    d = fit_snmf(args.stream_child, args.d_dict, wta_fraction=args.stream_wta, codes="memmap",
                 chunk_tokens=args.chunk_tokens, max_iter=args.stream_passes, patience=10**9, stop_gain=0,
                 device=args.device, history=h, seed=args.seed)
    total = time.perf_counter() - t
    end = time.monotonic()
    done.set()
    md = d.cfg.metadata
    print(json.dumps({"total": total, "history": h, "fit_seconds": md["fit_seconds"],
                      "rel_error": md["rel_error"], "codes": md["codes"],
                      "codes_disk_bytes": md["codes_disk_bytes"], "iterations": md["iterations"],
                      "start": start, "marks": marks, "end": end,
                      "status_at_end": _status(os.getpid())}), flush=True)


def bench_streaming(args, tmp: Path) -> dict:
    n, d = args.stream_tokens, args.d
    cache = tmp / "cache"
    write_s = write_cache(cache, n, d, torch.bfloat16)
    cache_bytes = du(cache)
    print(f"(b) wrote a {n:,} x {d} bf16 cache ({cache_bytes / 1e9:.2f} GB) in {write_s:.0f} s", flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stream-child", str(cache),
           "--d-dict", str(args.d_dict), "--stream-wta", str(args.stream_wta),
           "--chunk-tokens", str(args.chunk_tokens), "--stream-passes", str(args.stream_passes),
           "--device", args.device, "--seed", str(args.seed)]
    env = {**os.environ, "TMPDIR": str(tmp)}  # the code map goes next to the cache
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0, "VmRSS": 0}
    samples = 0
    codes_disk = [0]
    timeline: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        nonlocal samples
        while not stop.is_set():
            try:
                s = _status(proc.pid)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                break
            samples += 1
            timeline.append((time.monotonic(), s.get("RssAnon", 0)))
            for key in peak:
                peak[key] = max(peak[key], s.get(key, 0))
            try:  # the code map's disk use (its file lives under tmp while the fit runs)
                codes_disk[0] = max(codes_disk[0], sum(f.stat().st_blocks * 512 for f in tmp.glob(
                    "saekit-snmf-codes-*/*")))
            except OSError:
                pass
            stop.wait(0.05)

    th = threading.Thread(target=poll, daemon=True)
    t = time.perf_counter()
    th.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"streaming fit failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    h = res["history"]
    # history's first record comes after two passes over the data (initial codes, then the
    # first update); every later record after one
    secs = [h[0]["seconds"]] + [b["seconds"] - a["seconds"] for a, b in zip(h, h[1:], strict=False)]
    init = max(res["total"] - res["fit_seconds"], 0.0)

    def peak_between(a: float, b: float) -> int:
        return max((r for t, r in timeline if a <= t <= b), default=0)

    marks = res["marks"] or [res["end"]]
    phases = {  # peak RssAnon by phase of the fit (the first record comes after two passes)
        "start_to_first_record": peak_between(0, marks[0]),
        "passes": peak_between(marks[0], marks[-1]),
        "polish": peak_between(marks[-1], res["end"]),
        "after_fit": peak_between(res["end"], math.inf),
    }
    result = {
        "n_tokens": n, "d_in": d, "d_dict": args.d_dict, "dtype": "bfloat16", "wta_fraction": args.stream_wta,
        "chunk_tokens": args.chunk_tokens, "passes": len(h), "device": args.device,
        "cache_write_seconds": write_s, "cache_bytes": cache_bytes,
        "codes_disk_bytes": res["codes_disk_bytes"], "codes_disk_allocated_peak": codes_disk[0],
        "disk_bytes": cache_bytes + res["codes_disk_bytes"],
        "peak_rss_anon": peak["RssAnon"], "peak_rss_file": peak["RssFile"], "peak_rss_shmem": peak["RssShmem"],
        "peak_rss_anon_by_phase": phases, "peak_vm_rss": peak["VmRSS"], "vm_hwm_at_end": res["status_at_end"].get("VmHWM"), "polls": samples,
        "wall_seconds": wall, "init_seconds": init, "seconds_per_pass": statistics.median(secs[1:] or secs),
        "pass_seconds": secs, "polish_seconds": max(res["fit_seconds"] - h[-1]["seconds"], 0.0),
        "rel_error_last_pass": h[-1]["rel_error"], "rel_error": res["rel_error"],
        "target_rss_anon": 2 * 10**9, "met": peak["RssAnon"] < 2 * 10**9,
    }
    return result


# -- main ------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of well under a minute")
    ap.add_argument("--only", choices=["a", "b"], default=None)
    ap.add_argument("--n", type=int, default=20000, help="(a) rows")
    ap.add_argument("--d", type=int, default=1024, help="activation width")
    ap.add_argument("--d-dict", type=int, default=256)
    ap.add_argument("--mu-iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peers", default=default_peers(),
                    help="the peer venv's python (default .venv-peers/bin/python if present; 'none' to skip)")
    ap.add_argument("--stream-tokens", type=int, default=10**6)
    ap.add_argument("--stream-passes", type=int, default=5)
    ap.add_argument("--stream-wta", type=float, default=0.01)
    ap.add_argument("--chunk-tokens", type=int, default=65536)
    ap.add_argument("--device", default="cpu", help="(b) device of the streaming fit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="scratch directory (default: the system's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--stream-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stream_child:
        return stream_child(args)
    if args.quick:
        args.n, args.d, args.d_dict, args.mu_iters, args.rounds = 3000, 256, 32, 40, 1
        args.stream_tokens, args.chunk_tokens, args.stream_passes = 50_000, 16384, 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-snmf-", dir=args.tmp))
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                               f"{torch.get_num_threads()} threads",
                    "args": {k: v for k, v in vars(args).items() if k != "stream_child"}}
    try:
        if args.only in (None, "a"):
            a = result["fixed_error"] = bench_fixed_error(args, tmp)
            print(f"\n(a) time to the MU loop's pass-{args.mu_iters} error e_200 = {a['e_200']:.4f} "
                  f"(rank-{a['d_dict']} SVD bound {a['svd_bound']:.4f}), medians of {a['rounds']} rounds")
            print("| method | passes | rel. error | seconds to e_200 | whole call, s | speed-up vs MU loop |")
            print("|---|---|---|---|---|---|")
            for r in a["rows"]:
                f = (lambda v, spec, unit="": "–" if v is None else format(v, spec) + unit)
                print(f"| {r['method']} | {f(r['passes'], 'd')} | {f(r['rel_error'], '.4f')} | "
                      f"{f(r['seconds'], '.1f')} | {f(r['whole_call_seconds'], '.1f')} | "
                      f"{f(r['speedup'], '.1f', 'x')} |" + (f" {r['note']}" if r.get("note") else ""))
            best = max((r["speedup"] for r in a["rows"][1:] if r["method"].startswith("saekit")
                        and r["speedup"]), default=None)
            a["best_speedup"], a["met"] = best, bool(best and best >= 4)
            print(f"best saekit speed-up to e_200: {best and round(best, 1)}x (target >= 4x)")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        if args.only in (None, "b"):
            b = result["streaming"] = bench_streaming(args, tmp)
            print(f"\n(b) streaming fit, {b['n_tokens']:,} tokens x {b['d_in']} bf16, d_dict {b['d_dict']}, "
                  f"wta {b['wta_fraction']}, codes=memmap, chunk {b['chunk_tokens']:,}, {b['passes']} passes, "
                  f"{b['device']}")
            print("| peak RssAnon | seconds/pass | init, s | polish, s | wall, s | disk (cache + codes) | rel. error |")
            print("|---|---|---|---|---|---|---|")
            print(f"| {b['peak_rss_anon'] / 1e9:.2f} GB | {b['seconds_per_pass']:.1f} | {b['init_seconds']:.1f} | "
                  f"{b['polish_seconds']:.1f} | {b['wall_seconds']:.0f} | {b['cache_bytes'] / 1e9:.2f} + "
                  f"{b['codes_disk_bytes'] / 1e9:.2f} GB | {b['rel_error']:.4f} |")
            print(f"peak RssAnon {b['peak_rss_anon'] / 1e9:.2f} GB (target < 2 GB: {'met' if b['met'] else 'MISSED'}); "
                  "by phase: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in b["peak_rss_anon_by_phase"].items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
