"""Reading a dictionary directory's files safely: JSON and safetensors that fail with a
:class:`FormatError` naming the file, finite and bounded tensors, the sha256 record, and
the SAELens fields a saekit ``cfg.json`` must agree with. Shared by
:meth:`saekit.dictionaries.base.Dictionary.load` and the foreign readers
(:mod:`saekit.formats.files`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from saekit.fileio import file_sha256

SHA256 = re.compile(r"[0-9a-f]{64}")

#: Largest |value| a dictionary tensor may hold: far beyond any trained weight, and small
#: enough that encoding and decoding ordinary activations cannot overflow float32. A
#: flipped exponent bit in a file without a checksum lands beyond it.
MAX_MAGNITUDE = 1e15
#: Tensors exempt from that bound (a huge threshold legitimately switches a feature off).
UNBOUNDED = ("threshold", "sparsity")


class FormatError(ValueError):
    """A checkpoint that cannot be read: the message names the file and the problem."""


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or :class:`FormatError` naming the file."""
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise FormatError(f"{path}: unreadable ({e})") from None
    if not isinstance(out, dict):
        raise FormatError(f"{path}: expected a JSON object, got {type(out).__name__}")
    return out


def read_safetensors_file(path: Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file, or :class:`FormatError` naming it."""
    if not path.is_file():
        raise FormatError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt files
        raise FormatError(f"{path}: not a readable safetensors file ({e})") from None


def check_tensor(name: str, t: Any, where: str | Path, shape: tuple[int, ...] | None = None) -> Tensor:
    """``t`` is a finite floating-point tensor (of ``shape`` when given), or
    :class:`FormatError` naming the file and the tensor."""
    if not isinstance(t, Tensor):
        raise FormatError(f"{where}: {name!r} is a {type(t).__name__}, expected a tensor")
    if not t.is_floating_point():
        raise FormatError(f"{where}: tensor {name!r} has dtype {t.dtype}, expected a floating-point dtype")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise FormatError(f"{where}: tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)} "
                          "from the config")
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise FormatError(f"{where}: tensor {name!r} has {bad} NaN/inf value(s); the file is corrupted "
                          "or the run that wrote it diverged")
    if name not in UNBOUNDED and t.numel() and float(t.abs().max()) > MAX_MAGNITUDE:
        raise FormatError(f"{where}: tensor {name!r} holds values up to {float(t.abs().max()):.3g}, beyond any "
                          f"dictionary's weights (|x| <= {MAX_MAGNITUDE:g}); the file is corrupted")
    return t


#: SAELens' top-level cfg.json fields a saekit file must carry, in SAELens' words.
SAELENS_FIELDS = {"d_in": "SAELens' activation width", "d_sae": "SAELens' number of features",
                   "architecture": "SAELens' architecture"}


def check_saelens_fields(raw: dict[str, Any], d: Any, where: Path) -> None:
    """SAELens reads the top-level fields of a saekit file: they must be there and agree
    with the saekit section (a disagreement is a corrupted or hand-edited file)."""
    expected = d.saelens_config()
    for name, what in SAELENS_FIELDS.items():
        if name not in raw:
            raise FormatError(f"{where}: field {name!r} missing ({what})")
    for name in ("d_in", "d_sae", "architecture", "k", "apply_b_dec_to_input", "normalize_activations", "d_out"):
        if name in raw and name in expected and (raw[name] != expected[name]
                                                 or type(raw[name]) is not type(expected[name])):
            mine = {"d_sae": "saekit.d_dict", "architecture": "saekit.kind"}.get(name, f"saekit.{name}")
            raise FormatError(f"{where}: field {name!r} is {raw[name]!r}, but the saekit section "
                              f"({mine}) makes it {expected[name]!r}")
    md = raw.get("metadata")
    if "metadata" in raw and not isinstance(md, dict):
        raise FormatError(f"{where}: field 'metadata' must be an object, got {md!r}")
    for name, mine in (("hook_name", "hook"), ("model_name", "model")):
        if md and name in md and md[name] != getattr(d.cfg, mine):
            raise FormatError(f"{where}: field 'metadata.{name}' is {md[name]!r}, but saekit.{mine} is "
                              f"{getattr(d.cfg, mine)!r} (SAELens reads the former)")


def check_hashes(path: Path, hashes: Any, present: list[str], allowed: tuple[str, ...], where: Path) -> None:
    """The ``cfg.json``'s sha256 record of the tensor files (``allowed`` names) agrees with
    the files ``present``, or :class:`FormatError` naming the file."""
    if not isinstance(hashes, dict):
        raise FormatError(f"{where}: field 'saekit.sha256' must be an object of file -> sha256, got {hashes!r}")
    for name, sha in hashes.items():
        if name not in allowed:
            raise FormatError(f"{where}: field 'saekit.sha256' names {name!r}, not a tensor file of a "
                              f"dictionary ({list(allowed)})")
        if not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise FormatError(f"{where}: field 'saekit.sha256.{name}' must be 64 lowercase hex digits, got {sha!r}")
        if name not in present:
            raise FormatError(f"{path / name}: missing, but cfg.json records its sha256")
    for name in present:
        if name not in hashes:
            raise FormatError(f"{path / name}: not in cfg.json's saekit.sha256 (it lists {sorted(hashes)}); "
                              "the file was added after the directory was written")
        got = file_sha256(path / name)
        if got != hashes[name]:
            raise FormatError(f"{path / name}: sha256 {got} differs from {hashes[name]} recorded in cfg.json; "
                              "the file was modified or truncated since it was written")
