"""The ``saekit`` command. Each subcommand is a thin layer over the public API.

Every job's flags are generated from its config dataclass
(:func:`saekit.schema.add_config_arguments`), and the command calls the job's Python
entry with the flags given as ``key=value`` overrides, so ``saekit harvest --n-tokens
4096 ...`` and ``saekit.run_harvest(None, out, ["n_tokens=4096", ...])`` are one code path:
``train`` (:func:`saekit.train`), ``harvest`` (:func:`saekit.run_harvest`), ``compare``
(:func:`saekit.run_compare`), ``eval NAME`` (:func:`saekit.run_eval`), ``toy``
(:func:`saekit.run_toy`), ``demo`` (:func:`saekit.run_demo`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from pathlib import Path

from saekit.jobs import Interrupted
from saekit.schema import add_config_arguments, add_config_file_arguments, given_overrides, plural


def _cmd_demo(args: argparse.Namespace) -> int:
    from saekit.demo import DemoConfig, run_demo

    run_demo(args.config, args.out, given_overrides(DemoConfig, args) + args.set, overwrite=args.overwrite)
    return 0


def _cmd_harvest(args: argparse.Namespace) -> int:
    from saekit.activations.job import HarvestConfig, run_harvest

    if args.out is None:
        raise ValueError("--out is required: the cache directory to create")
    print(run_harvest(args.config, args.out, given_overrides(HarvestConfig, args) + args.set,
                      overwrite=args.overwrite))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from saekit.config import TrainConfig
    from saekit.training.recipe import default_out, train

    out = Path(args.out) if args.out else default_out(args.config)
    overrides = given_overrides(TrainConfig, args) + args.set
    try:
        done = train(args.config, out, overrides, resume=args.resume, overwrite=args.overwrite)
    except (Interrupted, KeyboardInterrupt) as e:
        again = shlex.join(["saekit", "train", args.config, "--out", str(out),
                            *(x for s in overrides for x in ("--set", s))])
        print(f"\nsaekit train: interrupted{f' ({e})' if str(e) else ''}; continue with: {again} --resume",
              file=sys.stderr)
        return 130
    for run_dir, dictionary in done.items():
        if not (run_dir / "dictionary").exists():
            continue  # another rank wrote it
        print(f"wrote {run_dir / 'dictionary'}: {dictionary}")
        md = dictionary.cfg.metadata
        if "rel_error" in md:
            print(f"  relative error {md['rel_error']:.4f} after {md['iterations']} passes")
        if (run_dir / "eval.json").exists():
            r = json.loads((run_dir / "eval.json").read_text())
            print(f"  FVU {r['fvu']:.3f}  L0 {r['l0']:.1f}  dead {100 * r['frac_dead']:.1f}%  "
                  f"CE recovered {r['ce_recovered_zero']:.3f} (zero) {r['ce_recovered_mean']:.3f} (mean)  "
                  f"KL recovered {r['kl_recovered_zero']:.3f} (zero)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "manifest.json").is_file():
        from saekit.activations import ActivationCache

        cache = ActivationCache(path)
        print(cache)
        m = cache.manifest
        print(f"model {m['model']} ({m['processing']}), data {m['data']}, dtype {m['dtype']}, "
              f"{m['n_tokens']:,} tokens")
        for h in cache.hooks:
            print(f"  {h}: d={cache.d(h)}, {plural(len(m['hooks'][h]['shards']), 'shard')}")
        if args.verify:
            problems = cache.verify()
            for p in problems:
                print(f"PROBLEM: {p}")
            print("verify: OK" if not problems else f"verify: {plural(len(problems), 'problem')}")
            return 1 if problems else 0
        return 0
    if (path / "config.json").is_file() and not (path / "ae.pt").is_file():
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("architecture") == "TransformerLensNative":
            keys = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn")
            print(f"native TransformerLens model {path}: " + ", ".join(f"{k}={cfg.get(k)}" for k in keys))
            return 0
    from saekit.formats import FormatError

    try:
        return _info_dictionary(args.path)
    except (FormatError, FileNotFoundError) as e:
        print(f"saekit info: {args.path} is not an activation cache (manifest.json), a native model "
              f"(config.json with architecture TransformerLensNative) or a dictionary: {e}", file=sys.stderr)
        return 2


def _info_dictionary(spec: str) -> int:
    from saekit.formats import load_dictionary

    d = load_dictionary(spec)
    c = d.cfg
    source = c.metadata.get("source_format", "saekit")
    print(f"{c.kind} dictionary {spec} ({source}): d_in={c.d_in}, d_dict={c.d_dict}, k={c.k}, hook={c.hook}, "
          f"model={c.model}, processing={c.processing}, input_norm={c.input_norm}")
    if c.is_transcoder:
        print(f"  transcoder: predicts hook_out={c.hook_out} (d_out={c.d_out})"
              + (", with a skip term W_skip" if c.options.get("skip") else ""))
    norms = d.W_dec.detach().norm(dim=1)
    print(f"  decoder row norms: min {norms.min():.4f}, mean {norms.mean():.4f}, max {norms.max():.4f}")
    if hasattr(d, "neurons_per_feature"):
        n = d.neurons_per_feature().float()
        print(f"  neurons per feature: min {n.min():.0f}, median {n.median():.0f}, max {n.max():.0f} "
              f"(wta_fraction {c.options['wta_fraction']})")
    if "model_sha256" in c.metadata:
        print(f"  fitted on model weights sha256 {c.metadata['model_sha256'][:16]}...")
    if d.log_firing_freq is not None:
        f = d.log_firing_freq
        print(f"  firing frequency (log10): median {f.median():.2f}, "
              f"dead (< 1e-8) {100 * float((f < -8).float().mean()):.1f}%, "
              f"dense (> 0.1) {100 * float((f > -1).float().mean()):.1f}%")
    else:
        print("  firing frequency: not recorded (saekit compare or eval measures it on tokens)")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from saekit import formats
    from saekit.formats import load_dictionary

    d = load_dictionary(args.src)
    if Path(args.dst).exists() and not args.overwrite:
        raise FileExistsError(f"{args.dst} exists; pass --overwrite to replace it")
    out = formats.export(d, args.dst, to=args.to)
    print(f"wrote {d.cfg.kind} dictionary ({d.cfg.metadata.get('source_format', 'saekit')}) as {args.to}: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from saekit.activations.job import HarvestConfig
    from saekit.config import TrainConfig
    from saekit.demo import DemoConfig

    ap = argparse.ArgumentParser(prog="saekit", description="Sparse dictionary learning for LM interpretability.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the main job end to end, on the demo LM or a real model")
    add_config_arguments(p, DemoConfig)
    add_config_file_arguments(p)
    p.add_argument("--out", default=None, help="output directory (default runs/demo, or runs/demo-NAME for "
                                                "another model)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output directory")
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("harvest", help="harvest activations into an on-disk cache")
    add_config_arguments(p, HarvestConfig)
    add_config_file_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    p.add_argument("--out", default=None, help="cache directory to create (required)")
    p.set_defaults(fn=_cmd_harvest)

    p = sub.add_parser("train", help="train an SAE from a TOML recipe")
    p.add_argument("config", help="recipe (TOML), e.g. train/demo.toml; the flags below override its fields")
    p.add_argument("--out", default=None, help="run directory (default runs/train/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue the run directory's unfinished dictionaries "
                                                         "from their checkpoints")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (value parsed as TOML); repeatable")
    add_config_arguments(p, TrainConfig)
    p.set_defaults(fn=_cmd_train)

    from saekit.compare import add_parser as add_compare_parser

    add_compare_parser(sub)
    from saekit.toy_report import add_parser as add_toy_parser

    add_toy_parser(sub)
    from saekit.evals import add_parser as add_eval_parser

    add_eval_parser(sub)
    from saekit.interp.pipeline import add_parser as add_interp_parser

    add_interp_parser(sub)

    p = sub.add_parser("convert", help="write a dictionary (any format read) as saekit, saelens, sparsify or circuit_tracer")
    p.add_argument("src", help="dictionary: a path in any format saekit reads, RELEASE/ID or hf://")
    p.add_argument("dst", help="directory to write")
    p.add_argument("--to", required=True, choices=["saekit", "saelens", "sparsify", "circuit_tracer"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("info", help="describe an activation cache, a dictionary or a model directory")
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="check every shard's size and sha256")
    p.set_defaults(fn=_cmd_info)
    return ap


def _flags(args: argparse.Namespace) -> set[str]:
    return {"--" + name.replace("_", "-") for name, v in vars(args).items() if isinstance(v, bool)}


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a job as Ctrl-C does: cleanly, with a word on resuming


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"saekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        again = ("rerun it with --resume to continue from what was saved" if "--resume" in _flags(args)
                 else "rerun it" + (" with --overwrite" if "--overwrite" in _flags(args) else ""))
        print(f"\nsaekit {args.command}: interrupted{f' ({e})' if str(e) else ''}; {again}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
