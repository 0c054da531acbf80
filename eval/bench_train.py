"""Benchmark: TopK SAE training throughput against the encoder-matmul bound and peer libraries.

    python eval/bench_train.py [--d-in 512] [--d-dict 8192] [--k 32] [--batch 2048] [--device cpu]
                               [--rounds 3] [--peers .venv-peers/bin/python]

Measured side by side in one run, in interleaved rounds (every case once per round,
medians over rounds of each round's median step):

- ``bound``: tokens/s if a step cost only the dense encoder matmul, 2·batch·d_in·d_dict
  FLOP at the fp32 matmul rate measured here;
- ``step (sparse)``: one training step (forward, backward, Adam) with saekit's sparse
  kernels, ``TopKSAE.train_step``;
- ``step (dense)``: the same step through dense autograd (``train_step_dense``);
- ``saekit.fit``: a whole ``fit`` pass over in-memory data (batching, scaling, dead
  tracking, decoder renormalisation included);
- peers (with ``--peers PYTHON``, the separate peer venv built by ``make
  .venv-peers/.ready``; default ``.venv-peers/bin/python`` when it exists, ``none`` to
  skip): one TopK training step of SAELens 6.54.12 and of EleutherAI sparsify 1.3.3,
  each library's own training-step code path, on the same batch (saved here, loaded
  there), timed in a subprocess by ``eval/peers/bench_train_peer.py`` (import and
  start-up not timed). "vs saekit" is a row's tokens/s over saekit's sparse step.

Target (issue 3): the sparse step and the ``fit`` pass reach at least 60% of the bound.

``--transcoder`` (``--skip`` for a skip transcoder) times a TopK transcoder instead: every
case predicts ``y [batch, d_out]`` from ``x`` (the SAELens peer is left out: its
transcoder has no TopK training class; sparsify trains with ``transcode=True``, and
``skip_connection=True`` with ``--skip``). Target (issue 19): at least 1.5x sparsify's
tokens/s. With ``--model``, ``x`` is the MLP's input (``hook_resid_mid``) and ``y`` its
output (``hook_mlp_out``) of the middle block.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import saekit  # noqa: E402
from saekit.dictionaries import REGISTRY, DictionaryConfig  # noqa: E402

PEERS = {"saelens": "SAELens {version} TopK step", "sparsify": "sparsify {version} TopK step"}


def timed(fn, repeats: int, sync, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def default_peers() -> str | None:
    p = ROOT / ".venv-peers" / "bin" / "python"
    return str(p) if p.exists() else None


def run_peer(python: str, lib: str, data: Path, args) -> dict:
    cmd = [python, str(ROOT / "eval" / "peers" / "bench_train_peer.py"), "--lib", lib, "--data", str(data),
           "--d-in", str(args.d_in), "--d-dict", str(args.d_dict), "--k", str(args.k),
           "--steps", str(args.steps), "--threads", str(torch.get_num_threads())]
    if args.transcoder:
        cmd += ["--transcoder"] + (["--skip"] if args.skip else [])
    env = {**os.environ, "PYTHONPATH": ""}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"peer {lib} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-dict", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--fit-batches", type=int, default=20, help="batches in the fit pass")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--peers", default=default_peers(),
                    help="the peer venv's python (default .venv-peers/bin/python if present; 'none' to skip)")
    ap.add_argument("--model", default=None,
                    help="train on this model's activations (e.g. smollm2-135m) instead of seeded randn; "
                         "d_in becomes the hook's width")
    ap.add_argument("--hook", default=None, help="with --model: the hook (default blocks.{n_layers//2}.mlp.hook_post)")
    ap.add_argument("--transcoder", action="store_true", help="time a TopK transcoder (x -> y) instead of an SAE")
    ap.add_argument("--skip", action="store_true", help="with --transcoder: a skip transcoder")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.skip and not args.transcoder:
        ap.error("--skip needs --transcoder")
    peers = None if args.peers in (None, "", "none") else args.peers
    peer_libs = {lib: PEERS[lib] for lib in PEERS if not (args.transcoder and lib == "saelens")} if peers else {}
    if peers and (args.device != "cpu" or args.dtype != "float32"):
        print("peer rows are CPU fp32 only: skipping them", file=sys.stderr)
        peers = None
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    B, d, n, k = args.batch, args.d_in, args.d_dict, args.k
    g = torch.Generator().manual_seed(0)
    if args.model:  # real activations: every case, peers included, trains on the same rows
        model = saekit.load_model(args.model, device="cpu")
        mid = model.cfg.n_layers // 2
        args.hook = args.hook or (f"blocks.{mid}.hook_resid_mid" if args.transcoder else f"blocks.{mid}.mlp.hook_post")
        hooks = [args.hook, f"blocks.{mid}.hook_mlp_out"] if args.transcoder else [args.hook]
        tokens = saekit.load_tokens("english", model, B * (args.fit_batches + 1) * 130 // 127)
        acts = saekit.harvest(model, hooks, tokens)
        acts = {h: a[: B * (args.fit_batches + 1)] for h, a in acts.items()}
        del model
        x_all, y_all = acts[hooks[0]], acts[hooks[-1]]
        args.d_in = d = x_all.shape[1]
    else:
        x_all = torch.randn(B * (args.fit_batches + 1), d, generator=g)
        # a transcoder's target: a fixed random map of the input plus noise, of the same width
        y_all = x_all @ torch.randn(d, d, generator=g) / d ** 0.5 + 0.1 * torch.randn(len(x_all), d, generator=g)
    x, data = x_all[:B].to(dev, dtype), x_all[B:].to(dtype)
    y, target = (y_all[:B].to(dev, dtype), y_all[B:].to(dtype)) if args.transcoder else (None, None)
    tc = dict(target=target, skip=args.skip) if args.transcoder else {}
    W = torch.randn(d, n, generator=g).to(dev, dtype)

    cases = {"bound": lambda: x @ W}
    names = {"bound": "encoder matmul bound"}
    for path in ("train_step", "train_step_dense"):
        shape = dict(hook="in", hook_out="out", d_out=y.shape[1], options={"skip": args.skip}) if args.transcoder else {}
        sae = REGISTRY["topk"](DictionaryConfig(kind="topk", d_in=d, d_dict=n, k=k, **shape)).to(dev, dtype)
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)
        dead = torch.zeros(n, dtype=torch.bool, device=dev)

        def step(sae=sae, opt=opt, path=path, dead=dead):
            out = getattr(sae, path)(x, 0, dead=dead, target=y)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        cases[path] = step
        names[path] = "one step, sparse kernels" if path == "train_step" else "one step, dense autograd"

    warm = {key: v[: 2 * B] if key == "target" else v for key, v in tc.items()}
    saekit.fit(data[: 2 * B], "topk", d_dict=n, k=k, batch_size=B, epochs=1, device=dev, **warm)  # warm-up
    times: dict[str, list[float]] = {c: [] for c in [*cases, "fit", *peer_libs]}
    peer_info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        xfile = Path(tmp) / "x.pt"
        torch.save(x.detach().cpu().float().clone() if y is None else
                   {"x": x.detach().cpu().float().clone(), "y": y.detach().cpu().float().clone()}, xfile)
        for rnd in range(args.rounds):
            for c, fn in cases.items():
                times[c].append(timed(fn, args.steps, sync, warmup=1 if rnd == 0 else 0))
            t = time.perf_counter()
            saekit.fit(data, "topk", d_dict=n, k=k, batch_size=B, epochs=1, device=dev, **tc)
            sync()
            times["fit"].append(time.perf_counter() - t)
            for lib in peer_libs:
                r = run_peer(peers, lib, xfile, args)
                peer_info[lib] = r
                times[lib].append(r["seconds"])
            print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
                f"{c} {(len(data) if c == 'fit' else B) / v[-1]:,.0f} tok/s" for c, v in times.items()),
                file=sys.stderr, flush=True)

    med = {c: statistics.median(v) for c, v in times.items()}
    bound = B / med["bound"]
    ours = B / med["train_step"]
    rows = []
    for c in times:
        tps = (len(data) if c == "fit" else B) / med[c]
        if c == "fit":
            name = f"saekit.fit pass ({len(data):,} tokens)"
        elif c in PEERS:
            name = PEERS[c].format(version=peer_info[c]["version"])
            name = name.replace("TopK step", "TopK transcoder step") if args.transcoder else name
        else:
            name = names[c]
        rows.append({"case": name, "tokens/s": tps, "of bound": tps / bound, "vs saekit": tps / ours,
                     "rounds": [(len(data) if c == "fit" else B) / t for t in times[c]]})

    what = ("TopK skip transcoder" if args.skip else "TopK transcoder") if args.transcoder else "TopK SAE"
    print(f"{what} training{f' on {args.model} {args.hook}' if args.model else ''}, "
          f"d_in={d}, d_dict={n}, k={k}, batch={B}, {dev}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; matmul rate {2 * B * d * n / med['bound'] / 1e9:.1f} GFLOP/s; "
          f"medians of {args.rounds} interleaved rounds")
    print("| case | tokens/s | of bound | vs saekit |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['tokens/s']:,.0f} | {100 * r['of bound']:.0f}% | {r['vs saekit']:.2f}x |")
    for lib in peer_info:
        print(f"saekit's sparse step is {med[lib] / med['train_step']:.1f}x faster than {PEERS[lib].split()[0]}")
    if args.out:
        # repository-relative, so the file names no machine's path
        shown = os.path.relpath(peers, ROOT) if peers and Path(peers).is_absolute() else peers
        out = {"args": {**vars(args), "peers": shown}, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "rows": rows, "peers": peer_info}
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
