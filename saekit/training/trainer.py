"""The SAE trainer behind ``saekit.fit`` and ``saekit train``.

The recipe follows the references (training_anchors.md): inputs scaled so that
E‖x − x̄‖² = d_in (folded into the saved weights; SAELens scales E‖x‖², which lets a
shared offset change the sparsity trade-off); b_dec initialised to the geometric
median of a sample (or its mean); ``W_enc = W_decᵀ`` at init. Adam (0.9, 0.999) uses
the lr rule 2e-4 / sqrt(d_dict / 2¹⁴) (sparsify, dictionary_learning), raised for short
runs, when no lr is given (:mod:`saekit.training.schedule`), with linear warm-up and a
linear decay over the last 20% of steps. Gradients
are clipped at 1. Decoder rows have unit norm: kept so during training for the
top-k and JumpReLU kinds, folded at the end for ``relu``. AuxK runs on features
dead for ``dead_tokens``.

Resumable: every random choice is a function of ``(seed, step)`` (each epoch's
data order comes from its own seeded generator), so a checkpoint needs only the
parameters, the optimizer's moments, the dead-feature counters and the step. A
resumed run ends with exactly the weights of an uninterrupted one (fp32, CPU).

Transcoders (``target``): the rows of ``target [n, d_out]`` are the outputs paired with
``data``'s rows; a batch indexes both with the same rows, so the order (and resume)
is unchanged. Input and target are scaled separately, each to E‖· − mean‖² = its width,
and both scales are folded into the saved weights (:meth:`SAE.fold_input_scale`).
``b_dec`` starts at the target's geometric median, the encoder at random unit
directions of the input space with ``b_enc = −m W_enc`` (``m`` the input's geometric
median, so pre-activations start centred without subtracting anything from the input),
and FVU is the target's.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

import saekit.training.checkpoint as checkpoint
from saekit.activations.cache import CacheRows
from saekit.activations.stream import LiveStream
from saekit.dictionaries import REGISTRY
from saekit.dictionaries.sae import SAE
from saekit.fileio import atomic_write_text, remove_directory
from saekit.jobs import Interrupted, graceful, requested
from saekit.models import resolve_device
from saekit.schema import plural
from saekit.training.inputs import check_target, input_scale, rows_and_config, variance
from saekit.training.metrics_log import MetricsLog
from saekit.training.schedule import default_dead_tokens, default_lr, default_schedule
from saekit.version import provenance

CHECKPOINT = "checkpoint"


def geometric_median(x: Tensor, iters: int = 100, eps: float = 1e-8) -> Tensor:
    """Weiszfeld's algorithm on the rows of ``x``."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() < 1e-6 * (m.norm() + eps):
            return new
        m = new
    return m


class Trainer:
    """Train one SAE on activations, with checkpoints and logs.

    ``data`` is a ``[n, d_in]`` tensor, an activation-cache directory or an
    ``ActivationCache`` of one hook (read memory-mapped, shuffled batches gathered
    across shards). Other parameters match :func:`fit`; ``out`` is the run directory
    (``metrics.jsonl``, ``checkpoint/``, and the final dictionary in ``dictionary/``).
    ``target`` (a ``[n, d_out]`` tensor, row i the output paired with ``data``'s row i)
    makes the dictionary a transcoder; ``hook_out`` records the hook it came from.
    """

    def __init__(self, data: Tensor, kind: str, d_dict: int, k: int | None = None,
                 batch_size: int | None = None, seed: int = 0, hook: str | None = None,
                 model: Any = None, *, lr: float | None = None, n_tokens: int | None = None,
                 epochs: float | None = None, warmup_steps: int | None = None,
                 decay_start: float = 0.8, input_norm: str = "scalar",
                 b_dec_init: str = "geometric_median", dead_tokens: int | None = None,
                 device: Any = None, processing: str | None = None, autocast: bool = False,
                 compile: bool = False, target: Tensor | None = None, hook_out: str | None = None,
                 **options: Any):
        if kind not in REGISTRY:
            raise ValueError(f"unknown dictionary kind {kind!r}; available: {sorted(REGISTRY)}")
        if input_norm not in ("scalar", "none"):
            raise ValueError(f"input_norm for training must be 'scalar' or 'none', got {input_norm!r}")
        if b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ValueError(f"b_dec_init must be geometric_median, mean or zeros, got {b_dec_init!r}")
        if target is None and hook_out is not None:
            raise ValueError(f"hook_out={hook_out!r} names a transcoder's output, but no target was given")
        fields: dict[str, Any] = {}
        if target is not None:
            target = check_target(target, data)
            fields = {"d_out": target.shape[1], "hook_out": hook_out}
        data, cfg = rows_and_config(data, kind, d_dict, k, hook, model, processing, input_norm=input_norm,
                                    options=options, **fields)
        if isinstance(data, Tensor) and not torch.isfinite(data).all():
            raise ValueError("data contains NaN or inf activations")
        self.target = target
        self.data = data
        self.streaming = isinstance(data, LiveStream)
        self._stream: Any = None
        n, d_in = data.shape
        self.dev = resolve_device(device)
        if not getattr(REGISTRY[kind], "TRAINABLE", False) or (
                cfg.options.get("apply_b_dec_to_input") is False and not cfg.is_transcoder):
            raise ValueError(f"kind {kind!r} with options {options} loads and runs but does not train in saekit "
                             "(gated, or apply_b_dec_to_input=False as in Gemma Scope checkpoints)")
        if not self.streaming and n_tokens is None and epochs is None:
            batch_size, epochs = default_schedule(n, batch_size)
        elif batch_size is None:
            batch_size, _ = default_schedule(n)
        self.seed, self.batch_size = seed, batch_size
        self.autocast, self.compile = autocast, compile
        # Under torchrun, rank r trains on the r-th slice of each seeded global batch and
        # gradients are averaged, which equals one process on the whole batch.
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world > 1 else 0
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} must divide evenly over {self.world} processes")
        total = n_tokens if n_tokens is not None else int(n * (epochs or 1))
        self.steps = max(1, total // batch_size)
        self.warmup = warmup_steps if warmup_steps is not None else min(1000, max(1, self.steps // 20))
        self.lr = lr or default_lr(d_dict, self.steps)
        self.decay_from = int(decay_start * self.steps)

        gen = torch.Generator().manual_seed(seed)
        self.sae: SAE = REGISTRY[kind](cfg)
        self.dead_after = (dead_tokens if dead_tokens is not None else
                           default_dead_tokens(total, batch_size, d_dict, k if self.sae.NEEDS_K else None))
        self.sae.reset_parameters(gen, dec_norm=1.0 if self.sae.UNIT_NORM_DECODER else 0.1)
        if self.streaming:
            if total > n:
                raise ValueError(f"a live stream of {n:,} activations cannot give n_tokens={total:,}; "
                                 "load more text")
            sample = data.sample(min(n, 8192)).to(self.dev, torch.float32)
        else:
            rows = torch.randperm(n, generator=gen)[:min(n, 8192)]
            sample = data[rows].to(self.dev, torch.float32)
        self.scale = input_scale(sample, input_norm)
        sample = sample * self.scale
        self.sample = sample  # kept to calibrate what needs the trained dictionary (finish)
        target_sample = sample
        self.target_scale = self.scale
        if target is not None:  # the same tokens as the input sample: rows of a tensor/cache, or stream order
            target_sample = (target.sample(len(sample)) if self.streaming else target[rows]).to(self.dev, torch.float32)
            self.target_scale = input_scale(target_sample, input_norm)
            target_sample = target_sample * self.target_scale
        self.sae.to(self.dev)
        with torch.no_grad():
            centre = {"geometric_median": geometric_median, "mean": lambda t: t.mean(0)}.get(b_dec_init)
            if centre is not None:
                self.sae.b_dec.copy_(centre(target_sample))
                if target is not None:  # the encoder reads raw inputs: centre them through b_enc
                    self.sae.b_enc.copy_(-(centre(sample) @ self.sae.W_enc))
        # fused: one kernel for all parameters (on a 2-core CPU, 8x faster than the default).
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=self.lr, betas=(0.9, 0.999), fused=True)
        self.step = 0
        self.since_fired = torch.zeros(d_dict, dtype=torch.long, device=self.dev)
        self.fired = torch.zeros(d_dict, dtype=torch.float64, device=self.dev)
        self.seen = 0
        self.train_seconds = 0.0
        self._order: tuple[int, Tensor | None] = (-1, None)
        # torch.compile of the SAE's forward and loss (the optimizer step stays eager).
        # Measured on a 2-core CPU at d_in 512, d_dict 8192: no faster than eager (the step
        # is matmul-bound) and about 20 s to compile; meant for GPUs.
        self._step_fn = torch.compile(self.sae.train_step) if compile else self.sae.train_step

    # -- schedule and data -----------------------------------------------------------

    def lr_at(self, step: int) -> float:
        f = min(1.0, (step + 1) / self.warmup)
        if step >= self.decay_from:
            f *= max(0.0, (self.steps - step) / max(1, self.steps - self.decay_from))
        return self.lr * f

    def batch(self, step: int) -> Tensor:
        """Rows of step ``step``: epoch e's order is a permutation seeded by (seed, e); a
        live stream is read in order (replayed up to ``step`` after a resume)."""
        return self.batch_pair(step)[0]

    def batch_pair(self, step: int) -> tuple[Tensor, Tensor | None]:
        """``(inputs, targets)`` of step ``step``, scaled: the same rows of ``data`` and of
        ``target`` (targets None for an SAE)."""
        if self.streaming:
            if self._stream is None:
                self._stream = self.data.paired_batches(self.target, skip=step)
            x, y = next(self._stream)
            if self.world > 1:
                per = self.batch_size // self.world
                x, y = x[self.rank * per:(self.rank + 1) * per], None if y is None else y[self.rank * per:
                                                                                        (self.rank + 1) * per]
            x = x.to(self.dev, torch.float32, non_blocking=True) * self.scale
            return x, None if y is None else y.to(self.dev, torch.float32, non_blocking=True) * self.target_scale
        n = len(self.data)
        rows = []
        pos, need = step * self.batch_size, self.batch_size
        while need:
            epoch, lo = divmod(pos, n)
            if self._order[0] != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._order = (epoch, torch.randperm(n, generator=g))
            take = self._order[1][lo:lo + need]
            rows.append(take)
            pos, need = pos + len(take), need - len(take)
        idx = rows[0] if len(rows) == 1 else torch.cat(rows)
        if self.world > 1:
            per = self.batch_size // self.world
            idx = idx[self.rank * per:(self.rank + 1) * per]
        x = self.data[idx].to(self.dev, torch.float32, non_blocking=True) * self.scale
        if self.target is None:
            return x, None
        return x, self.target[idx].to(self.dev, torch.float32, non_blocking=True) * self.target_scale

    # -- training ------------------------------------------------------------------

    def train_step(self, metrics: bool = True) -> dict[str, float] | None:
        """One optimizer step; the metrics (which synchronise with a GPU) only if asked."""
        sae, step = self.sae, self.step
        x, y = self.batch_pair(step)
        if isinstance(self.data, CacheRows) and not torch.isfinite(x).all():
            raise ValueError(f"NaN/inf activations in the batch of step {step} (cache {self.data.cache.path})")
        if isinstance(self.target, CacheRows) and not torch.isfinite(y).all():
            raise ValueError(f"NaN/inf target activations in the batch of step {step} (cache "
                             f"{self.target.cache.path}, hook {self.target.hook})")
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        # bf16 autocast: matmuls in bf16, parameters, optimizer state and the loss in fp32.
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self._step_fn(x, step, dead=self.since_fired > self.dead_after, target=y)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"{sae.cfg.kind} loss became {out.loss.item()} at step {step}; "
                                     "the last checkpoint (if any) is intact")
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        counts = out.counts
        if self.world > 1:
            for p in sae.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world
            counts = counts.clone()
            dist.all_reduce(counts)  # every rank must agree on which features are dead
        if sae.UNIT_NORM_DECODER:
            sae.remove_parallel_grad()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            if sae.UNIT_NORM_DECODER:
                sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if hasattr(sae, "clamp_threshold"):
                sae.clamp_threshold()
            self.since_fired = torch.where(counts > 0, 0, self.since_fired + self.batch_size)
            if step >= self.steps // 2:  # firing frequency over the second half of training
                self.fired += counts
                self.seen += self.batch_size
        self.step += 1
        if not metrics:
            return None
        return {"loss": out.loss.item(), **{k: v.item() for k, v in out.terms.items()},
                "fvu": (out.terms["mse"] / variance(x if y is None else y)).item(),
                "l0": counts.sum().item() / self.batch_size, "lr": self.lr_at(step),
                "dead_pct": 100 * (self.since_fired > self.dead_after).double().mean().item()}

    def snapshot(self) -> SAE:
        """A copy of the dictionary as ``finish`` would leave it (unit rows, scale folded),
        for evaluation mid-training; training goes on unchanged."""
        return self._for_inference(copy.deepcopy(self.sae)).eval()

    def _for_inference(self, sae: SAE) -> SAE:
        """BatchTopK's threshold calibrated, unit decoder rows, the input scale folded in (in place)."""
        if hasattr(sae, "calibrate_threshold"):
            sae.calibrate_threshold(self.sample)
        sae.normalize_decoder()
        if sae.cfg.input_norm == "scalar":
            sae.fold_input_scale(self.scale, self.target_scale)
        return sae

    def run(self, out: str | Path | None = None, *, checkpoint_every: int = 0, log_every: int = 50,
            progress: bool = False, eval_fn: Any = None, eval_every: int = 0,
            wandb_project: str | None = None) -> SAE:
        """Train to the last step (from wherever a resumed trainer stands) and finish.

        ``eval_fn(dictionary) -> dict`` runs every ``eval_every`` tokens and at the end;
        its results go to ``metrics.jsonl`` (``{"step", "eval": {...}}``) and the last
        to ``eval.json``. With ``wandb_project`` the same records also go to wandb.
        """
        for _ in self.steps_of_run(out, checkpoint_every=checkpoint_every, log_every=log_every,
                                   progress=progress, eval_fn=eval_fn, eval_every=eval_every,
                                   wandb_project=wandb_project):
            pass
        return self.sae

    def steps_of_run(self, out: str | Path | None = None, *, checkpoint_every: int = 0, log_every: int = 50,
                     progress: bool = False, eval_fn: Any = None, eval_every: int = 0,
                     wandb_project: str | None = None) -> Iterator[int]:
        """:meth:`run` as a generator that yields after each step (for lockstep training,
        :func:`train_together`); the dictionary is finished when it is exhausted."""
        log = None
        main = self.rank == 0
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            log = MetricsLog(out / "metrics.jsonl", self.step, wandb_project,
                              self.sae.cfg.to_dict()) if main else None
        every = max(1, checkpoint_every // self.batch_size) if checkpoint_every else 0
        eval_steps = max(1, eval_every // self.batch_size) if eval_every else 0
        it = range(self.step, self.steps)
        if progress:
            it = tqdm(it, desc=f"train {self.sae.cfg.kind}", unit="step", initial=self.step, total=self.steps)
        t_last, tok_last = time.time(), self.step * self.batch_size
        with graceful():
            for _ in it:
                t = time.time()
                nxt = self.step + 1
                want = (log is not None and (nxt % log_every == 0 or nxt == self.steps)) or (progress and nxt % 20 == 0)
                m = self.train_step(metrics=want)
                self.train_seconds += time.time() - t
                if log is not None and (self.step % log_every == 0 or self.step == self.steps):
                    now = time.time()
                    tokens = self.step * self.batch_size
                    log.write({"step": self.step, "tokens": tokens, **m,
                               "tokens_per_s": (tokens - tok_last) / max(now - t_last, 1e-9)})
                    t_last, tok_last = now, tokens
                if progress and self.step % 20 == 0:
                    it.set_postfix(loss=f"{m['loss']:.3g}", fvu=f"{m['fvu']:.3f}", l0=f"{m['l0']:.1f}")
                if out is not None and main and every and self.step % every == 0 and self.step < self.steps:
                    self.save_checkpoint(out / CHECKPOINT)
                if eval_fn is not None and main and eval_steps and self.step % eval_steps == 0 and self.step < self.steps:
                    result = eval_fn(self.snapshot())
                    if log is not None:
                        log.write({"step": self.step, "tokens": self.step * self.batch_size, "eval": result})
                yield self.step
                if requested():
                    if progress:
                        it.close()
                    if out is not None and main:
                        self.save_checkpoint(out / CHECKPOINT)
                    where = f"; checkpoint {out / CHECKPOINT}" if out is not None else ""
                    raise Interrupted(f"{requested()} at step {self.step} of {self.steps}{where}")
        sae = self.finish(out / "dictionary" if out is not None and main else None)
        if eval_fn is not None and main:
            result = eval_fn(sae)
            if log is not None:
                log.write({"step": self.step, "tokens": self.step * self.batch_size, "eval": result})
                atomic_write_text(out / "eval.json", json.dumps(result, indent=2) + "\n")
        if out is not None and main:
            remove_directory(out / CHECKPOINT)  # the dictionary supersedes it
        if log is not None:
            log.close()

    def finish(self, path: Path | None = None) -> SAE:
        """Unit-norm decoder rows, the input scale folded in, firing frequencies attached."""
        sae = self._for_inference(self.sae)
        sae.log_firing_freq = (self.fired / max(self.seen, 1)).clamp_min(1e-10).log10().float().cpu()
        sae.cfg.metadata.update({"steps": self.steps, "tokens": self.steps * self.batch_size,
                                 "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                                 "input_scale": self.scale, "train_seconds": round(self.train_seconds, 2),
                                 **({"target_scale": self.target_scale} if self.target is not None else {}),
                                 **provenance()})
        sae.eval()
        if path is not None:
            sae.save(path)
        return sae

    # -- checkpoints -----------------------------------------------------------------

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"sae.{k}": v for k, v in self.sae.state_dict().items()}
        opt = self.opt.state_dict()
        for i, st in opt["state"].items():
            for key, v in st.items():
                tensors[f"opt.{i}.{key}"] = v
        tensors["since_fired"] = self.since_fired
        tensors["fired"] = self.fired
        meta = {"step": self.step, "seen": self.seen, "scale": self.scale,
                "train_seconds": self.train_seconds, "steps": self.steps,
                "config": self.sae.cfg.to_dict()}
        if self.target is not None:
            meta["target_scale"] = self.target_scale
        return tensors, meta

    def save_checkpoint(self, path: Path) -> None:
        """Trainer state as safetensors + JSON, written to a temporary directory and renamed
        (:func:`saekit.training.checkpoint.save`)."""
        checkpoint.save(path, *self.state())

    def load_checkpoint(self, path: Path) -> None:
        """Restore the state :meth:`save_checkpoint` wrote. Checks, each failing with a
        ``ValueError`` that names the file and the field or tensor: the sha256 of
        ``state.safetensors`` and of ``state.json``'s fields when ``state.json`` records
        them (``"sha256": {"state.safetensors": ..., "state.json": ...}``; older
        checkpoints have none), every field's type and range, that the checkpoint is of
        this run, and every tensor's name, dtype, shape and finiteness
        (:mod:`saekit.training.checkpoint`)."""
        path = Path(path)
        meta = checkpoint.read_fields(path)
        if meta.get("config") != self.sae.cfg.to_dict() or meta["steps"] != self.steps:
            raise ValueError(f"checkpoint {path} is from a different run (config or length differs); "
                             "resume with the same config")
        tensors = checkpoint.read_tensors(path, self.dev)
        want = {f"sae.{k}": v for k, v in self.sae.state_dict().items()}
        want.update(since_fired=self.since_fired, fired=self.fired)
        checkpoint.check_tensors(path, tensors, want, [p for g in self.opt.param_groups for p in g["params"]])
        self.sae.load_state_dict({k.removeprefix("sae."): v for k, v in tensors.items() if k.startswith("sae.")})
        opt = self.opt.state_dict()
        opt["state"] = {}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, i, name = key.split(".", 2)
                opt["state"].setdefault(int(i), {})[name] = v
        self.opt.load_state_dict(opt)
        self.since_fired = tensors["since_fired"]
        self.fired = tensors["fired"]
        self.step, self.seen = meta["step"], meta["seen"]
        self.scale, self.train_seconds = meta["scale"], meta["train_seconds"]
        if self.target is not None:
            ts = meta.get("target_scale")
            if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts) or ts <= 0:
                raise ValueError(f"{path / checkpoint.STATE_JSON}: field 'target_scale' must be a positive "
                                 f"finite number for a transcoder's checkpoint, got {ts!r}")
            self.target_scale = float(ts)


def train_together(jobs: list[tuple[Trainer, dict[str, Any]]], progress: bool = False) -> list[SAE]:
    """Train several dictionaries in lockstep: every trainer takes step s before any takes
    step s + 1, so trainers fed by :meth:`LiveStream.together` share each LM forward.

    ``jobs`` pairs each trainer with its :meth:`Trainer.run` keywords (``out``,
    ``checkpoint_every``, ...). Trainers resumed at different steps catch up in turn:
    at each round only those at the lowest step move. Returns the finished dictionaries.
    """
    with graceful():  # one signal handler for all: each trainer checkpoints, then Interrupted
        return _train_together(jobs, progress)


def _train_together(jobs: list[tuple[Trainer, dict[str, Any]]], progress: bool) -> list[SAE]:
    runs = [(t, t.steps_of_run(**{**kw, "progress": False})) for t, kw in jobs]
    bar = None
    if progress:
        bar = tqdm(total=max(t.steps for t, _ in runs), initial=min(t.step for t, _ in runs),
                   desc=f"train {plural(len(runs), 'dictionary', 'dictionaries')}", unit="step")
    active = list(runs)
    try:
        while active:
            low = min(t.step for t, _ in active)
            for t, gen in [r for r in active if r[0].step == low]:
                if next(gen, None) is None:  # exhausted: the dictionary is finished
                    active.remove((t, gen))
            if bar is not None and active and min(t.step for t, _ in active) > low:
                bar.update(min(t.step for t, _ in active) - low)
    except Interrupted:  # the others checkpoint too (each does when advanced once more)
        for _, gen in active:
            try:
                next(gen, None)
            except Interrupted:
                pass
        raise
    if bar is not None:
        bar.close()
    return [t.sae for t, _ in runs]
