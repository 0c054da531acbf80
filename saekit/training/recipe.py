"""``saekit train RECIPE.toml``: run a recipe's dictionaries into one run directory.

A run directory holds, per dictionary (one per hook × sweep variant; the directory
itself for a single one): ``metrics.jsonl``, ``checkpoint/`` while unfinished,
``dictionary/`` once finished, ``eval.json``; and ``run_config.json`` for the recipe.
It is claimed through :func:`saekit.jobs.claim_output`: a directory holding an earlier
run is refused unless ``resume`` (continue every unfinished dictionary from its
checkpoint, skip finished ones) or ``overwrite`` (start again).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from saekit.activations import LiveStream
from saekit.activations.cache import CacheRows
from saekit.activations.harvest import harvest
from saekit.config import TrainConfig, load_config
from saekit.data import load_tokens
from saekit.fileio import atomic_write_text
from saekit.formats import load_dictionary
from saekit.jobs import claim_output, graceful
from saekit.metrics.spliced import evaluate
from saekit.models import hook_width, load_model
from saekit.training.api import FITTED
from saekit.training.snmf import fit_snmf
from saekit.training.trainer import CHECKPOINT, Trainer, train_together

RUN_CONFIG = "run_config.json"


def default_out(recipe: Any) -> Path:
    """``runs/train/<recipe name>``: its own folder, apart from every other command's
    (``runs/train/defaults`` for a config object or no recipe)."""
    return Path("runs") / "train" / (Path(recipe).stem if isinstance(recipe, (str, Path)) else "defaults")


def train(recipe: TrainConfig | str | Path | None, out: str | Path | None = None,
          overrides: list[str] | None = None, *, resume: bool = False, overwrite: bool = False) -> dict[Path, Any]:
    """Run a training recipe from Python, as ``saekit train`` does (the command calls this):
    ``{run directory: dictionary}`` for every hook × sweep variant (finished ones skipped
    on ``resume`` are loaded from disk). ``recipe`` is a :class:`~saekit.config.TrainConfig`,
    a TOML file of its fields, or None (the defaults); ``overrides`` are ``--set`` strings
    (``["k=16", "d_dict=2048"]``), checked with the recipe before any work.

    >>> saekit.train("train/demo.toml", out="runs/train/demo", overrides=["n_tokens=200_000"])  # doctest: +SKIP
    """
    root = Path(out) if out is not None else default_out(recipe)
    done = {run_dir: trainer.sae for run_dir, trainer in
            run_recipe(recipe, root, overrides, resume=resume, overwrite=overwrite, log=print)}
    names = [name for name, _ in load_config(recipe, overrides).runs()]
    return {root / n: done[root / n] if root / n in done else load_dictionary(root / n / "dictionary")
            for n in names if root / n in done or (root / n / "dictionary").exists()}


def run_recipe(recipe: TrainConfig | str | Path | None, out: str | Path | None = None, overrides: list[str] | None = None, *,
               resume: bool = False, overwrite: bool = False, log=print) -> list[tuple[Path, Any]]:
    """Train (or fit) every dictionary of ``recipe``; return ``(run directory, trainer)``
    pairs (the trainer's ``sae`` is the dictionary). Only rank 0 writes under torchrun."""
    cfg = load_config(recipe, overrides)
    rank = _init_distributed(cfg)
    root = Path(out) if out is not None else default_out(recipe)
    runs = cfg.runs()
    if rank == 0:
        _claim(root, cfg, runs, resume, overwrite)
    # A transcoder's output hook is harvested in the same pass as its input hook.
    hooks = list(dict.fromkeys(h for _, c in runs for h in (c.hook, c.hook_out) if h is not None))
    if any(c.kind in FITTED for _, c in runs) and cfg.stream:
        raise ValueError(f"{recipe}: kind {runs[0][1].kind!r} is fitted by exact passes over the data, "
                         "which a live stream cannot replay cheaply: harvest a cache (`saekit harvest`) "
                         "and set `cache`, or train in memory (stream = false)")
    data, model, processing = _data(cfg, runs, hooks, recipe, rank)
    eval_fn = _eval_fn(cfg, model, log) if rank == 0 else None
    jobs = []
    for name, c in runs:
        out_run = root / name
        if resume and (out_run / "dictionary").exists() and not (out_run / CHECKPOINT).exists():
            log(f"{out_run / 'dictionary'} is already finished")
            continue
        if c.kind in FITTED:
            jobs.append((_Fit(data[c.hook], c, model, processing),
                         dict(out=out_run, eval_fn=eval_fn, checkpoint_every=c.checkpoint_every)))
            continue
        transcoder = {} if c.hook_out is None else {"target": data[c.hook_out], "hook_out": c.hook_out}
        trainer = Trainer(data[c.hook], c.kind, c.d_dict, c.k, c.batch_size, c.seed, c.hook, model,
                          lr=c.lr, n_tokens=min(c.n_tokens, len(data[c.hook])), warmup_steps=c.warmup_steps,
                          decay_start=c.decay_start, input_norm=c.input_norm, b_dec_init=c.b_dec_init,
                          dead_tokens=c.dead_tokens, device=c.device, processing=processing,
                          autocast=c.autocast, compile=c.compile, **transcoder, **c.options)
        if resume and (out_run / CHECKPOINT).exists():
            trainer.load_checkpoint(out_run / CHECKPOINT)
            log(f"resuming {out_run} at step {trainer.step} of {trainer.steps}")
        jobs.append((trainer, dict(out=out_run, checkpoint_every=c.checkpoint_every, log_every=c.log_every,
                                   progress=rank == 0, eval_fn=eval_fn, eval_every=c.eval_every,
                                   wandb_project=c.wandb_project)))
    if cfg.stream:  # one harvest feeds every run: train them in lockstep
        train_together(jobs, progress=rank == 0)
    else:
        for trainer, kw in jobs:
            trainer.run(**kw)
    return [(kw["out"], trainer) for trainer, kw in jobs]


def _claim(root: Path, cfg: TrainConfig, runs: list[tuple[str, TrainConfig]], resume: bool,
           overwrite: bool) -> None:
    """Refuse an earlier run unless told what to do with it; on resume, the recipe must
    be the one the run started with and something must be there to continue."""
    started = [root / name for name, _ in runs if (root / name / CHECKPOINT).exists()
               or (root / name / "dictionary").exists()]
    claim_output(root, overwrite=overwrite, resume=resume, what="training run", can_resume=bool(started))
    recorded = root / RUN_CONFIG
    now = dataclasses.asdict(cfg)
    if resume:
        if not started:
            raise ValueError(f"--resume: {root} holds no checkpoint and no finished dictionary to continue "
                             "from (nothing was saved before the run stopped); pass --overwrite to start again")
        if recorded.is_file() and json.loads(recorded.read_text()) != json.loads(json.dumps(now)):
            was = json.loads(recorded.read_text())
            diff = sorted(k for k in now if was.get(k) != json.loads(json.dumps(now[k])))
            raise ValueError(f"--resume: {recorded} records another recipe (fields {diff} differ); resume "
                             "with the recipe and --set values the run started with")
    atomic_write_text(recorded, json.dumps(now, indent=2) + "\n")


def _data(cfg: TrainConfig, runs, hooks: list[str], recipe, rank: int):
    """``({hook: rows}, model, processing)`` from the cache, a live stream or one harvest."""

    if cfg.cache:
        data = {h: CacheRows(cfg.cache, h) for h in hooks}
        manifest = data[hooks[0]].cache.manifest
        return data, manifest["model"], manifest["processing"]
    if cfg.stream:
        model = load_model(cfg.model, device=cfg.device)
        tokens = load_tokens(cfg.data, model, _text_tokens(cfg), cfg.ctx_len, seed=cfg.seed)
        sizes = {c.batch_size for _, c in runs}
        if len(sizes) > 1:
            raise ValueError(f"{recipe}: streaming trains every run from one harvest in lockstep, so "
                             f"the runs must share batch_size (got {sorted(sizes)}); or harvest a cache")
        return LiveStream.together(model, hooks, tokens, cfg.batch_size, buffer_bytes=cfg.buffer_mb << 20,
                                   seed=cfg.seed), model, None
    data, model = _harvest_for_training(cfg, hooks, recipe, rank)
    return data, model, None


class _Fit:
    """An SNMF/NMF recipe run with a trainer's ``run``: fit, save, evaluate."""

    def __init__(self, data, c, model, processing):
        self.data, self.c, self.model, self.processing = data, c, model, processing
        self.sae = None

    def run(self, out: Path, eval_fn=None, checkpoint_every: int = 0):
        c = self.c
        history: list[dict] = []
        # checkpoint_every counts tokens, as for SAEs: a pass reads all n_tokens of them
        every = math.ceil(checkpoint_every / len(self.data)) if checkpoint_every else 0
        with graceful():
            self.sae = fit_snmf(self.data, c.d_dict, kind=c.kind, k=c.k, seed=c.seed, hook=c.hook,
                                model=self.model, processing=self.processing, device=c.device,
                                progress=True, history=history, checkpoint=out / CHECKPOINT,
                                checkpoint_every=every, **c.options)
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return self.sae
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        self.sae.save(out / "dictionary")
        if eval_fn is not None:
            atomic_write_text(out / "eval.json", json.dumps(eval_fn(self.sae), indent=2) + "\n")
        return self.sae


def _text_tokens(cfg: TrainConfig) -> int:
    """Text to load for ``n_tokens`` activations: BOS and separators are masked, so 10% more."""
    return math.ceil(cfg.n_tokens * 1.1) + cfg.ctx_len


def _harvest_for_training(cfg: TrainConfig, hooks: list[str], recipe, rank: int):
    """Harvest the recipe's hooks into memory in one pass: ``({hook: activations}, model)``."""
    model = load_model(cfg.model, device=cfg.device)
    need = cfg.n_tokens * sum(hook_width(model, h) for h in hooks) * 4
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    if need > budget:
        raise ValueError(f"{recipe}: training from the model holds the activations in memory "
                         f"({need / 2**30:.1f} GiB for n_tokens={cfg.n_tokens:,} at {hooks}), more "
                         "than half of this machine's RAM: set `stream = true` in the recipe to harvest "
                         "while training, or build a cache with `saekit harvest` and set `cache`")
    tokens = load_tokens(cfg.data, model, _text_tokens(cfg), cfg.ctx_len, seed=cfg.seed)
    acts = harvest(model, hooks, tokens, progress=rank == 0)
    got = len(next(iter(acts.values())))
    if got < cfg.n_tokens:
        warnings.warn(f"{recipe}: the data gave {got:,} activations, fewer than n_tokens={cfg.n_tokens:,}",
                      stacklevel=2)
    return {h: a[:cfg.n_tokens] for h, a in acts.items()}, model


def _eval_fn(cfg: TrainConfig, model, log=print):
    """The evaluation callback, when the model can be loaded (it can when training
    from the model, or from a cache whose manifest names a loadable model)."""
    if cfg.eval_tokens <= 0:
        return None
    if isinstance(model, str):
        try:
            model = load_model(model, device=cfg.device)
        except (OSError, ValueError) as e:
            log(f"no evaluation: cannot load model {model!r} ({e})")
            return None
    data = "demo:heldout" if cfg.data == "demo" else cfg.data
    tokens = load_tokens(data, model, cfg.eval_tokens, cfg.ctx_len, seed=cfg.seed + 1)
    return lambda dictionary: evaluate(model, dictionary, tokens)


def _init_distributed(cfg: TrainConfig) -> int:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(local)
        cfg.device = f"cuda:{local}"
    elif cfg.device == "auto":
        cfg.device = "cpu"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank()
