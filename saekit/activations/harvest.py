"""Harvest activations: several hooks from one forward pass that stops early.

The forward is cut as soon as the last requested hook has fired (by raising from
inside that hook), so harvesting a mid-layer hook never pays for the layers above it
or for the unembedding, which on small models is a large share of the FLOPs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from saekit.data import token_mask
from saekit.models import (  # model_device: re-exported
    HOOK_TEMPLATES,
    HookedModel,
    hook_width,
    model_device,
    validate_hook,
)


class NonFiniteActivationError(ValueError):
    """An activation was NaN or infinite; the message names the hook and the batch."""


def model_lock(model: HookedModel) -> threading.RLock:
    """One re-entrant lock per model: hooks are per model, so a forward with hooks (a
    harvest in a prefetch thread, a splice in an evaluation) must not overlap another."""
    lock = getattr(model, "_saekit_lock", None)
    if lock is None:
        lock = threading.RLock()
        model._saekit_lock = lock
    return lock


class _StopForward(Exception):
    """Raised from the last hook to end the forward pass early."""


def hook_order(model: HookedModel, hooks: Sequence[str]) -> list[str]:
    """Validate hooks and sort them by where they fire in the forward pass."""
    if isinstance(hooks, str):
        hooks = [hooks]
    if not hooks:
        raise ValueError("harvest needs at least one hook")
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"duplicate hooks in {list(hooks)}")
    # HOOK_TEMPLATES lists a block's hooks in the order they fire.
    position = {t.split("}.", 1)[1]: i for i, t in enumerate(HOOK_TEMPLATES)}
    keyed = []
    for h in hooks:
        layer, kind = validate_hook(model, h)
        keyed.append(((layer, position[kind]), h))
    return [h for _, h in sorted(keyed)]


@torch.inference_mode()
def forward_hooks(model: HookedModel, hooks: Sequence[str], tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``tokens [batch, seq]`` up to the last of ``hooks``; return ``{hook: [batch, seq, d]}``.

    ``attn.hook_z`` comes back flattened over heads, ``[batch, seq, n_heads * d_head]``.
    """
    ordered = hook_order(model, hooks)
    last = ordered[-1]
    acts: dict[str, torch.Tensor] = {}

    def capture(name: str):
        def fn(x: torch.Tensor, hook: Any) -> None:
            acts[name] = x.flatten(2) if x.ndim == 4 else x
            if name == last and len(acts) == len(ordered):
                raise _StopForward
        return fn

    try:
        with model_lock(model):
            model.run_with_hooks(tokens, fwd_hooks=[(h, capture(h)) for h in ordered])
    except _StopForward:
        pass
    missing = [h for h in ordered if h not in acts]
    if missing:
        raise RuntimeError(f"hooks {missing} did not fire in the forward pass of {type(model).__name__}")
    return acts


def iter_harvest(model: HookedModel, hooks: Sequence[str], tokens: torch.Tensor, batch_size: int = 32, *,
                 mask: torch.Tensor | None = None, device: Any = None, dtype: torch.dtype | None = None,
                 progress: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Stream activations batch by batch: ``{hook: Tensor[n_valid_tokens, d]}`` per batch.

    Parameters
    ----------
    model
        A model with TransformerLens' hook API.
    hooks
        Hook names (``blocks.L.mlp.hook_post`` ...), captured in one forward pass.
    tokens
        LongTensor ``[n_windows, ctx_len]`` (``saekit.load_tokens``).
    batch_size
        Windows per forward pass.
    mask
        Bool ``[n_windows, ctx_len]``, True where a token is kept; default
        ``token_mask(tokens, model)`` (drops BOS, separators and padding).
    device, dtype
        Where and in what precision to return activations; default: the model's
        device and dtype.
    progress
        Show a tqdm progress bar.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n_windows, ctx_len], got shape {tuple(tokens.shape)}")
    if mask is None:
        mask = token_mask(tokens, model)
    elif mask.shape != tokens.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from tokens shape {tuple(tokens.shape)}")
    ordered = hook_order(model, hooks)
    mdev = model_device(model)
    starts = range(0, len(tokens), batch_size)
    if progress:
        starts = tqdm(starts, desc="harvest", unit="batch")
    for b, i in enumerate(starts):
        batch = tokens[i:i + batch_size].to(mdev, non_blocking=True)
        keep = mask[i:i + batch_size].to(mdev, non_blocking=True)
        acts = forward_hooks(model, ordered, batch)
        out = {}
        for h in ordered:
            x = acts[h][keep]
            if not torch.isfinite(x).all():
                bad = int((~torch.isfinite(x)).sum())
                raise NonFiniteActivationError(
                    f"{bad} NaN/inf values at hook {h!r} in batch {b} (windows {i}:{i + len(batch)})")
            out[h] = x.to(device=device or x.device, dtype=dtype or x.dtype)
        yield out


def harvest(model: HookedModel, hooks: Sequence[str], tokens: torch.Tensor, batch_size: int = 32, *,
            mask: torch.Tensor | None = None, device: Any = "cpu", dtype: torch.dtype | None = None,
            stream: bool = False, progress: bool = False) -> dict[str, torch.Tensor] | Iterator[dict[str, torch.Tensor]]:
    """Activations of several hooks from one forward pass per batch, BOS/padding excluded.

    Returns ``{hook: Tensor[n_tokens, d]}`` with ``n_tokens = mask.sum()``, rows in
    token order (window by window), on ``device`` (CPU by default). With
    ``stream=True`` returns :func:`iter_harvest`'s iterator instead. See
    :func:`iter_harvest` for the parameters.
    """
    if stream:
        return iter_harvest(model, hooks, tokens, batch_size, mask=mask, device=device,
                            dtype=dtype, progress=progress)
    if mask is None:
        mask = token_mask(tokens, model)
    n = int(mask.sum())
    out: dict[str, torch.Tensor] = {}
    row = 0
    for acts in iter_harvest(model, hooks, tokens, batch_size, mask=mask, device=device,
                             dtype=dtype, progress=progress):
        for h, x in acts.items():
            if h not in out:  # preallocate: no concatenation copy of the whole set
                out[h] = torch.empty((n, x.shape[1]), dtype=x.dtype, device=x.device)
            out[h][row:row + len(x)] = x
        row += len(next(iter(acts.values())))
    if not out:
        return {h: torch.empty((0, hook_width(model, h))) for h in hook_order(model, hooks)}
    return {h: out[h] for h in hooks} if not isinstance(hooks, str) else out
