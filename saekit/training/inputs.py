"""What both fitters start from: the rows to read and the dictionary's config.

The SAE trainer (:mod:`saekit.training.trainer`) and the SNMF fitter
(:mod:`saekit.training.snmf`) take the same data (a tensor, an activation cache or a
live stream) and record the same provenance of it (hook, model, processing) in the
dictionary they make; this is that shared first step.
"""

from __future__ import annotations

from typing import Any

from saekit.activations.stream import as_rows
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
