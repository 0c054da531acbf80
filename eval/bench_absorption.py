"""Benchmark: feature absorption of BatchTopK against Matryoshka BatchTopK on the demo LM.

    python eval/bench_absorption.py [--tokens 65536] [--d-dict 1024] [--k 16] [--out FILE]

Both kinds are fitted by ``saekit.fit`` at their defaults on the same activations of
``blocks.2.mlp.hook_post`` (training text: the demo corpus, seed 1), then
``saekit eval absorption`` (:mod:`saekit.evals.absorption`) measures, on 32,768 held-out
tokens, how often a planted family's main feature stays silent on the family's tokens
(false negatives) and how often a more specific feature carries the family instead
(absorption). Bussmann et al. (2025) and Chanin et al. (2024) found Matryoshka SAEs absorb
less; this checks it on the demo LM's planted hierarchy (issue 20, item 6).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--d-dict", type=int, default=1024)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import saekit
    from saekit.evals.absorption import Config, run

    hook = "blocks.2.mlp.hook_post"
    model = saekit.load_model(str(ROOT / "checkpoints" / "demo-lm"))
    tokens = saekit.load_tokens("demo", model, args.tokens, 128, seed=1)
    x = saekit.harvest(model, [hook], tokens, 32)[hook]
    rows = []
    for kind in ("batchtopk", "matryoshka_batchtopk"):
        t = time.time()
        d = saekit.fit(x, kind, d_dict=args.d_dict, k=args.k, hook=hook, model=model)
        r = run(Config(n_tokens=32768, dictionaries=[d]), model=model)
        row = {"kind": kind, "seconds": round(time.time() - t, 1),
               **{k.split("/")[-1]: round(v, 4) for k, v in r.summary.items() if isinstance(v, float)}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        from saekit.fileio import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows},
                                                     indent=1) + "\n")


if __name__ == "__main__":
    main()
