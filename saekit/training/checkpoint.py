"""The SAE trainer's checkpoints: its state as safetensors + JSON, written atomically
and checked field by field and tensor by tensor when read back.

A checkpoint is a directory with ``state.safetensors`` (the SAE's parameters, Adam's
moments, the dead-feature counters) and ``state.json`` (step, tokens seen, input scale,
seconds, steps, the dictionary's config, and the sha256 of both files' contents).
:class:`saekit.training.trainer.Trainer` writes it with :func:`save` and restores it
with :func:`read_fields`, :func:`read_tensors` and :func:`check_tensors`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from saekit.fileio import atomic_directory, file_sha256

STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"
#: Adam's state per parameter, as ``opt.<i>.<name>`` tensors.
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")


def _fields_sha256(meta: dict[str, Any]) -> str:
    fields = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(fields.encode()).hexdigest()


def save(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` (with both sha256s added) as a checkpoint directory,
    to a temporary sibling that replaces ``path`` in one step."""
    with atomic_directory(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
        meta = {**meta, "sha256": {STATE_TENSORS: file_sha256(tmp / STATE_TENSORS), STATE_JSON: _fields_sha256(meta)}}
        (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")


def read_fields(path: str | Path) -> dict[str, Any]:
    """``state.json``'s fields, checked: the recorded sha256 of ``state.safetensors`` and of
    the fields themselves (older checkpoints record none), and each number's type and
    range (``steps`` >= 1, ``step`` in 0..steps, ``seen`` >= 0, ``scale`` > 0,
    ``train_seconds`` >= 0). Every failure is a ``ValueError`` naming the file and field."""
    path = Path(path)
    jfile, tfile = path / STATE_JSON, path / STATE_TENSORS
    try:
        meta = json.loads(jfile.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors
        raise ValueError(f"checkpoint {path} cannot be read ({jfile}: {e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{jfile}: expected a JSON object, got {type(meta).__name__}")
    hashes = meta.get("sha256")
    if hashes is not None:
        if not isinstance(hashes, dict) or not set(hashes) <= {STATE_TENSORS, STATE_JSON} or not all(
                isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)
                for v in hashes.values()):
            raise ValueError(f"{jfile}: field 'sha256' must map state.safetensors/state.json to 64 hex "
                             f"digits, got {hashes!r}")
        if STATE_JSON in hashes and _fields_sha256(meta) != hashes[STATE_JSON]:
            raise ValueError(f"{jfile}: its fields' sha256 differs from the one recorded in it; the file was "
                             "modified since it was written")
        if STATE_TENSORS in hashes:
            try:
                got = file_sha256(tfile)
            except OSError as e:
                raise ValueError(f"checkpoint {path} cannot be read ({tfile}: {e})") from None
            if got != hashes[STATE_TENSORS]:
                raise ValueError(f"{tfile}: sha256 {got} differs from {hashes[STATE_TENSORS]} recorded "
                                 "in state.json; the file was modified or truncated since it was written")

    def number(name: str, integer: bool, low: float) -> Any:
        v = meta.get(name)
        ok = isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)
        if not ok or isinstance(v, bool) or v < low:
            kind = "an integer" if integer else "a finite number"
            raise ValueError(f"{jfile}: field {name!r} must be {kind} >= {low}, got {v!r}"
                             + (" (missing)" if name not in meta else ""))
        return v

    steps = number("steps", True, 1)
    step = number("step", True, 0)
    number("seen", True, 0)
    scale = number("scale", False, 0)
    number("train_seconds", False, 0)
    if scale <= 0 or step > steps:
        raise ValueError(f"{jfile}: step {step} of {steps} steps, scale {scale}: out of range")
    return meta


def read_tensors(path: str | Path, device: Any) -> dict[str, Tensor]:
    """``state.safetensors`` on ``device``; an unreadable file is a ``ValueError`` naming it."""
    tfile = Path(path) / STATE_TENSORS
    try:
        return load_file(tfile, device=str(device))
    except Exception as e:  # safetensors' own error type for truncated/corrupt files, OSError
        raise ValueError(f"checkpoint {path} cannot be read ({tfile}: {e})") from None


def check_tensors(path: str | Path, tensors: dict[str, Tensor], want: dict[str, Tensor],
                  params: list[Tensor]) -> None:
    """Check a checkpoint's tensors against the state they restore.

    Parameters
    ----------
    path
        The checkpoint directory (for the messages).
    tensors
        What :func:`read_tensors` gave.
    want
        The trainer's own state by name (``sae.*``, ``since_fired``, ``fired``): each
        tensor must have its dtype and shape.
    params
        The optimizer's parameters, in order: ``opt.<i>.step`` (float32 scalar),
        ``opt.<i>.exp_avg`` and ``opt.<i>.exp_avg_sq`` (the parameter's shape) for each
        ``i`` that has state, all three or none.

    Raises
    ------
    ValueError
        Naming the file and the tensor: unexpected or missing tensors, a wrong dtype or
        shape, NaN/inf values, negative firing counters.
    """
    tfile = Path(path) / STATE_TENSORS
    want = dict(want)
    opt_keys: dict[int, set[str]] = {}
    for key in tensors:
        if key.startswith("opt."):
            _, i, name = (key.split(".", 2) + ["", ""])[:3]
            if not i.isdigit() or int(i) >= len(params) or name not in ADAM_STATE:
                raise ValueError(f"{tfile}: unexpected tensor {key!r} (Adam state is opt.<i>.step/exp_avg/"
                                 f"exp_avg_sq for {len(params)} parameters)")
            opt_keys.setdefault(int(i), set()).add(name)
            want[key] = torch.zeros((), dtype=torch.float32) if name == "step" else params[int(i)].detach()
    for i, names in opt_keys.items():
        if names != set(ADAM_STATE):
            raise ValueError(f"{tfile}: Adam state of parameter {i} has {sorted(names)}, expected "
                             "step, exp_avg and exp_avg_sq")
    missing = sorted(set(want) - set(tensors))
    unknown = sorted(set(tensors) - set(want))
    if missing or unknown:
        raise ValueError(f"{tfile}: " + (f"missing tensor(s) {missing}" if missing else "")
                         + ("; " if missing and unknown else "") + (f"unexpected tensor(s) {unknown}" if unknown else ""))
    for key, ref in want.items():
        t = tensors[key]
        if t.dtype != ref.dtype or t.shape != ref.shape:
            raise ValueError(f"{tfile}: tensor {key!r} is {t.dtype} {tuple(t.shape)}, expected "
                             f"{ref.dtype} {tuple(ref.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{tfile}: tensor {key!r} has NaN/inf values")
    if (tensors["since_fired"] < 0).any() or (tensors["fired"] < 0).any():
        raise ValueError(f"{tfile}: tensor 'since_fired' or 'fired' has negative counts")
