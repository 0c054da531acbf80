"""``saekit harvest``: the job that harvests a model's activations into an on-disk cache.

:class:`HarvestConfig` is the job's one config (TOML, ``--set``, and the command's
flags); :func:`run_harvest` runs it from Python exactly as the command does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from saekit.activations.cache import ActivationCache
from saekit.activations.cache_writer import CacheWriter
from saekit.activations.harvest import iter_harvest
from saekit.config import load_config
from saekit.data import load_tokens, text_convention
from saekit.models import hook_width, load_model, model_name, model_processing


@dataclass
class HarvestConfig:
    """One harvest into a cache (``saekit harvest``)."""

    model: str
    """Model spec for ``saekit.load_model``: a native checkpoint dir, an HF dir or name, a .gguf file."""
    hooks: list[str]
    """Hook names, e.g. blocks.1.mlp.hook_post."""
    n_tokens: int
    """Text tokens to harvest (BOS, separators and padding are left out of the cache)."""
    data: str = "demo"
    """Text source: 'demo', 'english', a .txt/.jsonl/.parquet file or folder, or an HF dataset."""
    ctx_len: int = 128
    """Tokens per window."""
    batch_size: int = 32
    """Windows per forward pass."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """dtype stored in the cache."""
    shard_tokens: int | None = None
    """Tokens per shard file (default: 64 MiB shards for the widest hook)."""
    device: str | None = None
    """Default: cuda when present, else cpu."""

    RANGES = {"n_tokens": (1, None), "ctx_len": (2, None), "batch_size": (1, None), "shard_tokens": (1, None)}

    def validate(self, where: str = "config") -> None:
        if not self.hooks:
            raise ValueError(f"{where}: key 'hooks' lists no hook")


def run_harvest(config: HarvestConfig | str | Path | None, out: str | Path, overrides: list[str] | None = None, *,
                overwrite: bool = False, progress: bool = True) -> ActivationCache:
    """Harvest into the cache directory ``out``, as ``saekit harvest`` does; return the cache.

    Parameters
    ----------
    config
        A :class:`HarvestConfig`, or a TOML file of its fields (``None``: every required
        field from ``overrides``).
    out
        The cache directory to create; an existing one is refused unless ``overwrite``.
    overrides
        ``key=value`` strings (values in TOML), applied after ``config``, checked before
        any work.

    Notes
    -----
    Named ``run_harvest`` because ``saekit.harvest`` is the in-memory harvest
    (``harvest(model, hooks, tokens) -> {hook: Tensor}``), which keeps its signature.
    """
    cfg = load_config(config, overrides, cls=HarvestConfig)
    model = load_model(cfg.model, device=cfg.device)
    widths = {h: hook_width(model, h) for h in cfg.hooks}  # an unknown hook fails before the text loads
    tokens = load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len)
    with CacheWriter(out, widths, model=model_name(model), processing=model_processing(model),
                     data=str(cfg.data), dtype=getattr(torch, cfg.dtype), shard_tokens=cfg.shard_tokens,
                     ctx_len=cfg.ctx_len, extra={"text": text_convention(model)}, overwrite=overwrite) as writer:
        for batch in iter_harvest(model, cfg.hooks, tokens, cfg.batch_size, device="cpu", progress=progress):
            writer.add(batch)
        return writer.close()
