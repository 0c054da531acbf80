"""What both fitters start from: the rows to read and the dictionary's config.

The SAE trainer (:mod:`saekit.training.trainer`) and the SNMF fitter
(:mod:`saekit.training.snmf`) take the same data (a tensor, an activation cache or a
live stream) and record the same provenance of it (hook, model, processing) in the
dictionary they make; this is that shared first step. A transcoder's targets are
checked here too (:func:`check_target`), and the trainer's scaling of inputs and
targets (:func:`input_scale`) lives beside it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from saekit.activations.cache import CacheRows
from saekit.activations.stream import LiveStream, as_rows
from saekit.dictionaries.base import DictionaryConfig
from saekit.models import source_fields


def rows_and_config(data: Any, kind: str, d_dict: int, k: int | None, hook: str | None, model: Any,
                    processing: str | None = None, **fields: Any) -> tuple[Any, DictionaryConfig]:
    """The row storage of ``data`` and a new dictionary config for it.

    Parameters
    ----------
    data
        ``[n, d_in]`` tensor, activation cache (path or object, one hook) or live stream
        (:func:`saekit.activations.stream.as_rows`).
    kind, d_dict, k, hook
        The dictionary's fields.
    model, processing
        Where the activations came from (:func:`saekit.models.source_fields`: the model's
        name and processing, from a loaded model or a spec).
    fields
        Further :class:`~saekit.dictionaries.base.DictionaryConfig` fields
        (``input_norm``, ``options``).

    Returns
    -------
    tuple
        ``(rows, cfg)``, with ``cfg.d_in`` the data's width.

    Raises
    ------
    ValueError
        When the data is not two-dimensional.
    """
    rows = as_rows(data)
    if rows.ndim != 2:
        raise ValueError(f"data must be [n_tokens, d_in], got shape {tuple(rows.shape)}")
    cfg = DictionaryConfig(kind=kind, d_in=rows.shape[1], d_dict=d_dict, k=k, hook=hook,
                           **source_fields(model, processing), **fields)
    return rows, cfg


def input_scale(sample: Tensor, input_norm: str) -> float:
    """The factor making E‖x − x̄‖² = width on ``sample`` (1 without ``scalar`` norm).
    Centred: an offset shared by every token (b_dec's job) must not shrink the part the
    features explain, or the sparsity coefficients bite harder the larger the offset."""
    if input_norm != "scalar":
        return 1.0
    energy = (sample - sample.mean(0)).pow(2).sum(1).mean().item()
    return math.sqrt(sample.shape[1] / max(energy, 1e-30))


def variance(x: Tensor) -> Tensor:
    """Mean squared deviation from the batch mean per row (FVU's denominator)."""
    return (x - x.mean(0)).pow(2).sum(1).mean()


def check_target(target: Any, data: Any) -> Any:
    """A transcoder's targets, row i paired with ``data``'s row i (the trainer indexes both
    with the same rows): a finite floating ``[n, d_out]`` tensor beside a ``[n, d_in]``
    tensor, or another hook of the same activation cache as ``data`` (harvested in the
    same pass, so its rows are the same tokens; finiteness is checked per batch, as for
    the inputs). Anything else is a ValueError that names the problem."""
    data = as_rows(data)
    if isinstance(data, LiveStream) and isinstance(target, LiveStream):
        if target.source is not data.source:
            raise ValueError(f"target is a live stream of {target.hook} from another harvest than data's "
                             f"({data.hook}): stream both hooks with LiveStream.together so rows pair")
        return target
    if isinstance(data, CacheRows) and isinstance(target, CacheRows):
        if target.cache.path != data.cache.path:
            raise ValueError(f"target is hook {target.hook} of cache {target.cache.path}, data is of cache "
                             f"{data.cache.path}: rows pair only within one cache (harvest both hooks together)")
        return target
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a [n, d_out] tensor of output activations (or, with data from an "
                         f"activation cache, another hook of it), got {type(target).__name__}")
    if not isinstance(data, Tensor):
        raise ValueError("a transcoder trains from tensors, two hooks of one activation cache or two hooks "
                         "of one live stream (LiveStream.together): data is a "
                         f"{type(data).__name__}, target a {type(target).__name__}")
    if target.ndim != 2 or not target.is_floating_point():
        raise ValueError(f"target must be a floating-point [n, d_out] tensor, got shape {tuple(target.shape)} "
                         f"dtype {target.dtype}")
    if data.ndim == 2 and len(target) != len(data):
        raise ValueError(f"target has {len(target):,} rows but data has {len(data):,}: row i of target must be "
                         "the output paired with row i of data (harvest both hooks in one pass)")
    bad = int((~torch.isfinite(target)).any(1).sum())
    if bad:
        raise ValueError(f"target contains NaN or inf activations ({bad:,} of {len(target):,} rows)")
    return target
