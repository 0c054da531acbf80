"""The ``saekit`` command. Each subcommand is a thin layer over the public API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DTYPES = ("float32", "float16", "bfloat16")


def _cmd_demo(args: argparse.Namespace) -> int:
    from saekit.demo import DEMO_LM, run_demo

    run_demo(out=Path(args.out) if args.out else None, n_tokens=args.n_tokens, model_path=args.model or DEMO_LM)
    return 0


def _cmd_harvest(args: argparse.Namespace) -> int:
    import torch

    import saekit
    from saekit.activations import CacheWriter
    from saekit.data import text_convention
    from saekit.models import hook_width, model_name, model_processing

    model = saekit.load_model(args.model, device=args.device)
    tokens = saekit.load_tokens(args.data, model, args.n_tokens, args.ctx_len)
    hooks = args.hooks
    widths = {h: hook_width(model, h) for h in hooks}
    dtype = getattr(torch, args.dtype)
    with CacheWriter(args.out, widths, model=model_name(model), processing=model_processing(model),
                     data=str(args.data), dtype=dtype, shard_tokens=args.shard_tokens,
                     ctx_len=args.ctx_len, extra={"text": text_convention(model)},
                     overwrite=args.overwrite) as writer:
        for batch in saekit.iter_harvest(model, hooks, tokens, args.batch_size, device="cpu",
                                         progress=True):
            writer.add(batch)
        cache = writer.close()
    print(cache)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    import saekit
    from saekit.config import load_config
    from saekit.training import Trainer
    from saekit.training.trainer import CHECKPOINT, train_together

    cfg = load_config(args.config, args.set)
    rank = _init_distributed(cfg)
    root = Path(args.out or Path("runs") / Path(args.config).stem)
    runs = cfg.runs()
    for name, _ in runs:
        if (root / name / CHECKPOINT).exists() and not args.resume:
            raise FileExistsError(f"{root / name} holds a checkpoint from an earlier run; pass "
                                  "--resume to continue it, or choose another --out")
    hooks = list(dict.fromkeys(c.hook for _, c in runs))
    fitted = [name for name, c in runs if c.kind in FITTED_KINDS]
    if fitted and cfg.stream:
        raise ValueError(f"{args.config}: kind {runs[0][1].kind!r} is fitted by exact passes over the data, "
                         "which a live stream cannot replay cheaply: harvest a cache (`saekit harvest`) "
                         "and set `cache`, or train in memory (stream = false)")
    if cfg.cache:
        from saekit.activations.cache import CacheRows

        data = {h: CacheRows(cfg.cache, h) for h in hooks}
        manifest = data[hooks[0]].cache.manifest
        model, processing = manifest["model"], manifest["processing"]
    elif cfg.stream:
        from saekit.activations import LiveStream

        model = saekit.load_model(cfg.model, device=cfg.device)
        tokens = saekit.load_tokens(cfg.data, model, _text_tokens(cfg), cfg.ctx_len, seed=cfg.seed)
        sizes = {c.batch_size for _, c in runs}
        if len(sizes) > 1:
            raise ValueError(f"{args.config}: streaming trains every run from one harvest in lockstep, so "
                             f"the runs must share batch_size (got {sorted(sizes)}); or harvest a cache")
        data = LiveStream.together(model, hooks, tokens, cfg.batch_size, buffer_bytes=cfg.buffer_mb << 20,
                                   seed=cfg.seed)
        processing = None
    else:  # one forward pass for every hook of every run
        data, model = _harvest_for_training(cfg, hooks, args.config, rank)
        processing = None
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        (root / "run_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    eval_fn = _eval_fn(cfg, model) if rank == 0 else None
    jobs = []
    for name, c in runs:
        out = root / name
        if args.resume and (out / "dictionary").exists() and not (out / CHECKPOINT).exists():
            print(f"{out / 'dictionary'} is already finished")
            continue
        if c.kind in FITTED_KINDS:
            jobs.append((_Fit(data[c.hook], c, model, processing), dict(out=out, eval_fn=eval_fn)))
            continue
        trainer = Trainer(data[c.hook], c.kind, c.d_dict, c.k, c.batch_size, c.seed, c.hook, model,
                          lr=c.lr, n_tokens=min(c.n_tokens, len(data[c.hook])), warmup_steps=c.warmup_steps,
                          decay_start=c.decay_start, input_norm=c.input_norm, b_dec_init=c.b_dec_init,
                          dead_tokens=c.dead_tokens, device=c.device, processing=processing,
                          autocast=c.autocast, compile=c.compile, **c.options)
        if args.resume and (out / CHECKPOINT).exists():
            trainer.load_checkpoint(out / CHECKPOINT)
            print(f"resuming {out} at step {trainer.step} of {trainer.steps}")
        jobs.append((trainer, dict(out=out, checkpoint_every=c.checkpoint_every, log_every=c.log_every,
                                   progress=rank == 0, eval_fn=eval_fn, eval_every=c.eval_every,
                                   wandb_project=c.wandb_project)))
    if cfg.stream:  # one harvest feeds every run: train them in lockstep
        train_together(jobs, progress=rank == 0)
    else:
        for trainer, kw in jobs:
            trainer.run(**kw)
    for trainer, kw in jobs:
        if rank == 0:
            out = kw["out"]
            print(f"wrote {out / 'dictionary'}: {trainer.sae}")
            if isinstance(trainer, _Fit):
                print(f"  relative error {trainer.sae.cfg.metadata['rel_error']:.4f} after "
                      f"{trainer.sae.cfg.metadata['iterations']} passes")
            if (out / "eval.json").exists():
                r = json.loads((out / "eval.json").read_text())
                print(f"  FVU {r['fvu']:.3f}  L0 {r['l0']:.1f}  dead {100 * r['frac_dead']:.1f}%  "
                      f"CE recovered {r['ce_recovered_zero']:.3f} (zero) {r['ce_recovered_mean']:.3f} (mean)  "
                      f"KL recovered {r['kl_recovered_zero']:.3f} (zero)")
    return 0


FITTED_KINDS = ("snmf", "nmf")


class _Fit:
    """An SNMF/NMF recipe run with a trainer's ``run``: fit, save, evaluate."""

    def __init__(self, data, c, model, processing):
        self.data, self.c, self.model, self.processing = data, c, model, processing
        self.sae = None

    def run(self, out: Path, eval_fn=None):
        import torch.distributed as dist

        from saekit.fileio import atomic_write_text
        from saekit.training.snmf import fit_snmf

        c = self.c
        history: list[dict] = []
        self.sae = fit_snmf(self.data, c.d_dict, kind=c.kind, k=c.k, seed=c.seed, hook=c.hook,
                            model=self.model, processing=self.processing, device=c.device,
                            progress=True, history=history, **c.options)
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return self.sae
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        self.sae.save(out / "dictionary")
        if eval_fn is not None:
            atomic_write_text(out / "eval.json", json.dumps(eval_fn(self.sae), indent=2) + "\n")
        return self.sae


def _text_tokens(cfg) -> int:
    """Text to load for ``n_tokens`` activations: BOS and separators are masked, so 10% more."""
    import math

    return math.ceil(cfg.n_tokens * 1.1) + cfg.ctx_len


def _harvest_for_training(cfg, hooks: list[str], recipe: str, rank: int):
    """Harvest the recipe's hooks into memory in one pass: ``({hook: activations}, model)``."""

    import saekit
    from saekit.models import hook_width

    model = saekit.load_model(cfg.model, device=cfg.device)
    need = cfg.n_tokens * sum(hook_width(model, h) for h in hooks) * 4
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    if need > budget:
        raise ValueError(f"{recipe}: training from the model holds the activations in memory "
                         f"({need / 2**30:.1f} GiB for n_tokens={cfg.n_tokens:,} at {hooks}), more "
                         "than half of this machine's RAM: set `stream = true` in the recipe to harvest "
                         "while training, or build a cache with `saekit harvest` and set `cache`")
    tokens = saekit.load_tokens(cfg.data, model, _text_tokens(cfg), cfg.ctx_len, seed=cfg.seed)
    acts = saekit.harvest(model, hooks, tokens, progress=rank == 0)
    got = len(next(iter(acts.values())))
    if got < cfg.n_tokens:
        import warnings

        warnings.warn(f"{recipe}: the data gave {got:,} activations, fewer than n_tokens={cfg.n_tokens:,}",
                      stacklevel=2)
    return {h: a[:cfg.n_tokens] for h, a in acts.items()}, model


def _eval_fn(cfg, model):
    """The evaluation callback, when the model can be loaded (it can when training
    from the model, or from a cache whose manifest names a loadable model)."""
    import saekit
    from saekit.training.evaluate import evaluate

    if cfg.eval_tokens <= 0:
        return None
    if isinstance(model, str):
        try:
            model = saekit.load_model(model, device=cfg.device)
        except (OSError, ValueError) as e:
            print(f"no evaluation: cannot load model {model!r} ({e})")
            return None
    data = "demo:heldout" if cfg.data == "demo" else cfg.data
    tokens = saekit.load_tokens(data, model, cfg.eval_tokens, cfg.ctx_len, seed=cfg.seed + 1)
    return lambda dictionary: evaluate(model, dictionary, tokens)


def _init_distributed(cfg) -> int:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(local)
        cfg.device = f"cuda:{local}"
    elif cfg.device == "auto":
        cfg.device = "cpu"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank()


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
            print(f"  {h}: d={cache.d(h)}, {len(m['hooks'][h]['shards'])} shards")
        if args.verify:
            problems = cache.verify()
            for p in problems:
                print(f"PROBLEM: {p}")
            print("verify: OK" if not problems else f"verify: {len(problems)} problem(s)")
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
    import saekit

    d = saekit.load_dictionary(spec)
    c = d.cfg
    source = c.metadata.get("source_format", "saekit")
    print(f"{c.kind} dictionary {spec} ({source}): d_in={c.d_in}, d_dict={c.d_dict}, k={c.k}, hook={c.hook}, "
          f"model={c.model}, processing={c.processing}, input_norm={c.input_norm}")
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
    from saekit.dictionaries import load_dictionary

    d = load_dictionary(args.src)
    if Path(args.dst).exists() and not args.overwrite:
        raise FileExistsError(f"{args.dst} exists; pass --overwrite to replace it")
    out = formats.export(d, args.dst, to=args.to)
    print(f"wrote {d.cfg.kind} dictionary ({d.cfg.metadata.get('source_format', 'saekit')}) as {args.to}: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="saekit", description="Sparse dictionary learning for LM interpretability.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the main job end to end, on the demo LM or a real model")
    p.add_argument("--out", default=None, help="output directory (default runs/demo, or runs/demo-NAME for "
                                                "another model)")
    p.add_argument("--n-tokens", type=int, default=None,
                   help="held-out tokens to harvest (default 65,536 on the demo LM, 32,768 on a real model)")
    p.add_argument("--model", default=None, help="the demo LM (default), 'smollm2-135m', a .gguf file, an HF "
                                                  "directory or name: real models run on the English corpus")
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("harvest", help="harvest activations into an on-disk cache")
    p.add_argument("--model", required=True, help="native checkpoint dir, HF dir or HF name")
    p.add_argument("--hooks", nargs="+", required=True, help="hook names, e.g. blocks.1.mlp.hook_post")
    p.add_argument("--data", default="demo", help="'demo', a .txt/.jsonl/.parquet file or folder, or an HF dataset")
    p.add_argument("--n-tokens", type=int, required=True)
    p.add_argument("--ctx-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype stored in the cache")
    p.add_argument("--shard-tokens", type=int, default=None,
                   help="tokens per shard file (default: 64 MiB shards for the widest hook)")
    p.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    p.add_argument("--out", required=True, help="cache directory to create")
    p.set_defaults(fn=_cmd_harvest)

    p = sub.add_parser("train", help="train an SAE from a TOML recipe")
    p.add_argument("config", help="recipe (TOML), e.g. train/demo.toml")
    p.add_argument("--out", default=None, help="run directory (default runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field (value parsed as TOML); repeatable")
    p.set_defaults(fn=_cmd_train)

    from saekit.compare import add_parser as add_compare_parser

    add_compare_parser(sub)
    from saekit.toy_report import add_parser as add_toy_parser

    add_toy_parser(sub)
    from saekit.evals import add_parser as add_eval_parser

    add_eval_parser(sub)
    from saekit.interp.pipeline import add_parser as add_interp_parser

    add_interp_parser(sub)

    p = sub.add_parser("convert", help="write a dictionary (any format read) as saekit, saelens or sparsify")
    p.add_argument("src", help="dictionary: a path in any format saekit reads, RELEASE/ID or hf://")
    p.add_argument("dst", help="directory to write")
    p.add_argument("--to", required=True, choices=["saekit", "saelens", "sparsify"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    p.set_defaults(fn=_cmd_convert)

    p = sub.add_parser("info", help="describe an activation cache, a dictionary or a model directory")
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="check every shard's size and sha256")
    p.set_defaults(fn=_cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"saekit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
