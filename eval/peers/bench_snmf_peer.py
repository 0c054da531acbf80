"""overcomplete's SemiNMF on a saved matrix, timed; run by the peer venv's python.

    .venv-peers/bin/python eval/peers/bench_snmf_peer.py --data A.safetensors --d-dict 256 \
        --iters 200 --mode fit|trace [--target 0.399]

Prints one JSON line (the last line of stdout). ``eval/bench_snmf.py`` runs it.

- ``--mode fit``: ``SemiNMF(d_dict, solver="mu", tol=0).fit(A, max_iter=iters)`` timed as
  one call (``tol=0``: its stopping test on the change of Z is off, so it runs all
  ``iters`` iterations, as the MU loop it is compared with does), then the relative
  error ``‖A − Z D‖_F / ‖A‖_F`` of what it returns;
- ``--mode trace``: the same initialisation (``init_random_z``, ``init_random_d``) and the
  same update (``_one_step_snmf_multiplicative_update``, the step ``fit`` runs) iteration
  by iteration, timing the steps only, the error evaluated between them outside the
  timed region; reports the first iteration whose error is <= ``--target`` and the
  step time up to it (initialisation included).

overcomplete 0.3.0's package ``__init__`` imports its vision models, and with them
torchvision, whose PyPI wheel is a CUDA build that cannot load against the CPU torch.
The optimisation subpackage needs none of it, so it is imported without running the
top-level ``__init__``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from importlib.metadata import version

import torch
from safetensors.torch import load_file


def import_semi_nmf():
    spec = importlib.util.find_spec("overcomplete")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("overcomplete is not installed in this environment")
    if "overcomplete" not in sys.modules:
        pkg = types.ModuleType("overcomplete")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__version__ = version("overcomplete")
        sys.modules["overcomplete"] = pkg
    from overcomplete.optimization import semi_nmf

    return semi_nmf


def rel_error(A: torch.Tensor, Z: torch.Tensor, D: torch.Tensor, nA: float) -> float:
    return float(torch.linalg.matrix_norm(A - Z @ D)) / nA


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--d-dict", type=int, default=256)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--mode", choices=["fit", "trace"], default="fit")
    ap.add_argument("--target", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    semi_nmf = import_semi_nmf()
    A = load_file(args.data)["A"].float().contiguous()
    nA = float(torch.linalg.matrix_norm(A))
    torch.manual_seed(args.seed)
    model = semi_nmf.SemiNMF(args.d_dict, solver="mu", device="cpu", tol=0.0)
    info = {"lib": "overcomplete", "version": version("overcomplete"), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "mode": args.mode, "iters": args.iters}
    if args.mode == "fit":
        t = time.perf_counter()
        Z, D = model.fit(A, max_iter=args.iters)
        sec = time.perf_counter() - t
        print(json.dumps({**info, "seconds": sec, "rel_error": rel_error(A, Z, D, nA)}))
        return
    t = time.perf_counter()
    Z = model.init_random_z(A)
    D = model.init_random_d(A, Z)
    spent = time.perf_counter() - t
    errors, hit_iter, hit_seconds, hit_err = [], None, None, None
    for i in range(1, args.iters + 1):
        t = time.perf_counter()
        Z, D = semi_nmf._one_step_snmf_multiplicative_update(A, Z, D)
        spent += time.perf_counter() - t
        e = rel_error(A, Z, D, nA)
        errors.append(e)
        if hit_iter is None and args.target is not None and e <= args.target:
            hit_iter, hit_seconds, hit_err = i, spent, e
    print(json.dumps({**info, "seconds": spent, "rel_error": errors[-1], "best_rel_error": min(errors),
                      "target": args.target, "hit_iter": hit_iter, "hit_seconds": hit_seconds,
                      "hit_rel_error": hit_err, "errors": errors}))


if __name__ == "__main__":
    main()
