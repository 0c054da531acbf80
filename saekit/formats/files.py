"""Reading checkpoint files safely and building a saekit :class:`Dictionary` from their
tensors: the helpers every reader (:mod:`saekit.formats.readers`,
:mod:`saekit.formats.gemma_scope_2`) shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saekit.dictionaries.base import REGISTRY, Dictionary, DictionaryConfig
from saekit.dictionaries.integrity import (
    FormatError,
    check_tensor,
    read_json_object,
    read_safetensors_file,
)
from saekit.dictionaries.sae import SAE  # noqa: F401  (importing the kinds registers them in REGISTRY)
from saekit.dictionaries.snmf import SNMF  # noqa: F401

# -- safe file access ---------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path)


def read_safetensors(path: Path) -> dict[str, Tensor]:
    return read_safetensors_file(path)


def read_pt(path: Path) -> dict[str, Any]:
    """A ``.pt`` state dict through ``torch.load(weights_only=True)`` only: a pickle that
    needs anything beyond tensors and plain containers is refused and never runs."""
    # torch's weights-only unpickler raises pickle's UnpicklingError; reached through
    # torch.serialization so that saekit itself never imports pickle.
    refused = torch.serialization.pickle.UnpicklingError
    try:
        out = torch.load(path, map_location="cpu", weights_only=True)
    except refused as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise FormatError(f"{path}: refused: this pickle needs more than tensors to load, and saekit "
                          f"only reads .pt files with torch.load(weights_only=True) ({first})") from e
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except Exception as e:  # a truncated or bit-flipped zip/pickle raises many types
        raise FormatError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(out, dict):
        raise FormatError(f"{path}: expected a state dict, got {type(out).__name__}")
    return out


def read_npz(path: Path) -> dict[str, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: torch.from_numpy(np.ascontiguousarray(f[k])) for k in f.files}
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except Exception as e:  # zipfile/np errors for truncated or non-npz files; pickled arrays
        raise FormatError(f"{path}: not a readable .npz of arrays ({e})") from e


def need(tensors: dict[str, Any], names: list[str], where: Path) -> None:
    missing = [n for n in names if not isinstance(tensors.get(n), Tensor)]
    if missing:
        have = sorted(k for k, v in tensors.items() if isinstance(v, Tensor))
        raise FormatError(f"{where}: missing tensor(s) {missing}; it has {have}")


# -- building a saekit dictionary ------------------------------------------------------


def build(kind: str, tensors: dict[str, Tensor], where: Path, *, k: int | None = None, hook: str | None = None,
          model: str | None = None, processing: str | None = None, input_norm: str = "none",
          options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
          fold: bool = True, rescale: bool = False, transcoder: bool = False,
          hook_out: str | None = None) -> Dictionary:
    """A ``kind`` dictionary holding ``tensors`` (saekit names and orientation, float32).

    ``rescale``: the file's codes are the pre-activations times ‖W_dec,i‖ (SAELens'
    ``rescale_acts_by_decoder_norm``), which folding makes exact for any kind.
    ``transcoder``: ``W_dec`` is ``[d_dict, d_out]`` and ``d_in`` is ``W_enc``'s rows.
    """
    for name, t in tensors.items():
        check_tensor(name, t, where)
    W_dec = tensors["W_dec"]
    if W_dec.ndim != 2 or 0 in W_dec.shape:
        raise FormatError(f"{where}: W_dec must be 2-D [d_dict, d_in], got shape {tuple(W_dec.shape)}")
    d_dict, d_in = W_dec.shape
    d_out = None
    if transcoder:
        d_out, d_in = d_in, tensors["W_enc"].shape[0]
    try:
        cfg = DictionaryConfig(kind=kind, d_in=d_in, d_dict=d_dict, k=k, hook=hook, model=model,
                               processing=processing, input_norm=input_norm, options=options or {},
                               metadata=dict(metadata or {}), d_out=d_out, hook_out=hook_out)
    except ValueError as e:
        raise FormatError(f"{where}: {e}") from e
    d = REGISTRY[kind](cfg)
    d.load_tensors({n: t.float() for n, t in tensors.items()}, where=str(where))
    if rescale or (fold and kind != "topk"):
        norms = d.W_dec.detach().norm(dim=1)
        if rescale or not torch.allclose(norms, torch.ones_like(norms), atol=1e-6):
            d.normalize_decoder()
            for name, t in {**d.saelens_tensors(), **d.extra_tensors()}.items():
                if not torch.isfinite(t).all():
                    raise FormatError(f"{where}: tensor {name!r} is not finite after moving the decoder "
                                      "norms into the encoder (a decoder row of norm 0 or overflowing values)")
        cfg.metadata["decoder_norms_folded"] = True
    return d


def positive_int(value: Any, field: str, where: Path, hi: int | None = None, what: str = "") -> int:
    """A positive integer field (an integral float or a one-element tensor is accepted)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    what = f" ({what})" if what else ""
    if value is None:
        raise FormatError(f"{where}: field {field!r} missing{what}")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FormatError(f"{where}: field {field!r} must be a positive integer{what}, got {value!r}")
    if hi is not None and value > hi:
        raise FormatError(f"{where}: field {field!r} is {value}, more than the {hi} features{what}")
    return value


_NOTHING = object()


def get(cfg: dict[str, Any], field: str, types: tuple[type, ...], where: Path, default: Any = _NOTHING,
        what: str = "") -> Any:
    """``cfg[field]`` (``field`` may be dotted: ``metadata.hook_name``) checked against
    ``types`` (``type(None)`` for null); ``default`` when absent, or a named error when
    there is no default."""
    node: Any = cfg
    parts = field.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            raise FormatError(f"{where}: field {'.'.join(parts[:i])!r} must be an object, got {node!r}")
        if part not in node:
            if default is _NOTHING:
                raise FormatError(f"{where}: field {field!r} missing" + (f" ({what})" if what else ""))
            return default
        node = node[part]
    ok = isinstance(node, types) and not (isinstance(node, bool) and bool not in types)
    if not ok:
        names = " or ".join("null" if t is type(None) else {"str": "a string", "dict": "an object", "bool": "true/false",
                                                               "int": "an integer", "float": "a number"}.get(t.__name__, t.__name__)
                            for t in types)
        raise FormatError(f"{where}: field {field!r} must be {names}" + (f" ({what})" if what else "")
                          + f", got {node!r}")
    return node


def shapes(t: dict[str, Any], want: dict[str, tuple[int, ...]], where: Path) -> None:
    """Check the named tensors (finite, floating point, of these shapes) before any
    reader arithmetic touches them."""
    for name, shape in want.items():
        check_tensor(name, t[name], where, shape)


def matrix(t: dict[str, Any], name: str, where: Path) -> tuple[int, int]:
    x = check_tensor(name, t[name], where)
    if x.ndim != 2:
        raise FormatError(f"{where}: tensor {name!r} must be 2-D, got shape {tuple(x.shape)}")
    return tuple(x.shape)


# -- hook names of other libraries -> TransformerLens ------------------------------------
