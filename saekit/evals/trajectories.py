"""Straight walks of one activation (the last position's) and what the model makes of
each step: the batched core of the synthetic-activation experiments
(:mod:`saekit.evals.synthetic`), with the max-slope and plateau-length summaries.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.harvest import model_lock
from saekit.models import HookedModel, model_device


class Trajectories(NamedTuple):
    """Straight walks at the last position of a prompt: ``start + n·step·direction``."""

    prompt: Tensor
    """``[J]`` index of the prompt each walk runs in."""
    start: Tensor
    """``[J, d]`` activation at step 0."""
    direction: Tensor
    """``[J, d]`` unit direction."""
    n_valid: Tensor
    """``[J]`` steps computed (``min(n_steps, ⌊distance/step⌋)``, at least 1)."""
    distance: Tensor
    """``[J]`` distance from start to the end point."""


def walks(prompt: Tensor, start: Tensor, end: Tensor, step: float, n_steps: int) -> Trajectories:
    diff = end - start
    dist = diff.norm(dim=-1)
    n_valid = torch.clamp(torch.floor(dist / step), 1, n_steps).long()
    return Trajectories(prompt, start, diff / dist.clamp_min(1e-12).unsqueeze(-1), n_valid, dist)


class _Stop(Exception):
    pass


@torch.no_grad()
def run_trajectories(model: HookedModel, prompts: Tensor, tr: Trajectories, hook: str, read_hook: str | None,
                     want_kl: bool, step: float, n_steps: int, batch_size: int,
                     progress: bool = False) -> tuple[Tensor, Tensor]:
    """Read-outs along every walk: ``(l2 [J, n_steps], kl [J, n_steps])``, NaN past ``n_valid``.

    Walks go in groups; each group first runs its step-0 rows (the references), then all
    its other (walk, step) rows, ``batch_size`` rows per forward pass.
    """
    dev = model_device(model)
    J = len(tr.prompt)
    l2 = torch.full((J, n_steps), math.nan)
    kl = torch.full((J, n_steps), math.nan)
    group = max(1, (32 * batch_size) // n_steps)

    def forward(rows_j: Tensor, rows_n: Tensor) -> tuple[Tensor | None, Tensor | None]:
        vec = (tr.start[rows_j] + (rows_n.float() * step).unsqueeze(-1) * tr.direction[rows_j]).to(dev)
        got: dict[str, Tensor] = {}

        def put(x: Tensor, hook: Any = None) -> Tensor:
            flat = x.reshape(*x.shape[:2], -1).clone()
            flat[:, -1] = vec.to(flat.dtype)
            return flat.reshape(x.shape)

        def read(x: Tensor, hook: Any = None) -> None:
            got["read"] = x.reshape(*x.shape[:2], -1)[:, -1].float().cpu()
            if not want_kl:
                raise _Stop

        fwd = [(hook, put)] + ([(read_hook, read)] if read_hook else [])
        logp = None
        try:
            with model_lock(model):
                logits = model.run_with_hooks(prompts[tr.prompt[rows_j]].to(dev), fwd_hooks=fwd)
            logp = logits[:, -1].float().log_softmax(-1).cpu()
        except _Stop:
            pass
        return got.get("read"), logp

    starts = range(0, J, group)
    if progress:
        starts = tqdm(starts, desc=f"walks at {hook}", unit="group")
    for g0 in starts:
        js = torch.arange(g0, min(J, g0 + group))
        ref_read, ref_logp = [], []
        for lo in range(0, len(js), batch_size):
            r, lp = forward(js[lo:lo + batch_size], torch.zeros(len(js[lo:lo + batch_size]), dtype=torch.long))
            ref_read.append(r)
            ref_logp.append(lp)
        ref_r = torch.cat(ref_read) if read_hook else None
        ref_lp = torch.cat(ref_logp) if want_kl else None
        l2[js, 0] = 0.0
        kl[js, 0] = 0.0
        # Every later (walk, step) row of the group, walk-major.
        counts = tr.n_valid[js] - 1
        rows_j = torch.repeat_interleave(js, counts)
        rows_n = torch.cat([torch.arange(1, int(c) + 1) for c in counts]) if len(js) else torch.zeros(0, dtype=torch.long)
        for lo in range(0, len(rows_j), batch_size):
            rj, rn = rows_j[lo:lo + batch_size], rows_n[lo:lo + batch_size]
            r, lp = forward(rj, rn)
            local = rj - g0
            if read_hook:
                l2[rj, rn] = (r - ref_r[local]).norm(dim=-1)
            if want_kl:
                ref = ref_lp[local]
                kl[rj, rn] = (ref.exp() * (ref - lp)).sum(-1)
    return l2, kl


def max_slope_step(d: Tensor, n_valid: Tensor, min_slope: float, n_steps: int) -> Tensor:
    """Per walk: argmax_n d(n) − d(n−1) over the computed steps (step 0 takes step 1's
    slope, as the paper pads); ``n_steps − 1`` where no slope exceeds ``min_slope``."""
    slopes = torch.diff(d, dim=1)
    slopes = torch.cat([slopes[:, :1], slopes], dim=1)
    valid = torch.arange(d.shape[1]).unsqueeze(0) < n_valid.unsqueeze(1)
    slopes = torch.where(valid & ~slopes.isnan(), slopes, torch.tensor(-math.inf))
    best = slopes.max(dim=1)
    return torch.where(best.values > min_slope, best.indices, torch.tensor(n_steps - 1))


def plateau_length(d: Tensor, threshold: float, n_steps: int) -> Tensor:
    """Per walk: the first step with d(n) ≥ threshold, ``n_steps`` if none (NaN never counts)."""
    over = d >= threshold
    first = over.float().argmax(dim=1)
    return torch.where(over.any(dim=1), first, torch.tensor(n_steps))
