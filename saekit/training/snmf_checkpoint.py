"""Checkpoints of an SNMF fit (:func:`saekit.training.snmf.fit_snmf`).

A checkpoint is the fit's state between two passes: a directory with
``state.safetensors`` (the dictionary, its Gram matrix, the best pass's dictionary,
the pending rescaling and reseeding, ``Σ‖A‖²``, the k-means generator's state and,
unless they are recomputed, every chunk's codes) and ``state.json`` (the pass to run
next, the stopping rules' state, the history records and a fingerprint of the fit).
It is written with :func:`saekit.fileio.atomic_directory`, so it is complete or
absent; resuming from it gives exactly the dictionary of an uninterrupted fit (fp32,
CPU). No pickle: safetensors and JSON only.

Under ``torch.distributed`` rank 0 gathers the other ranks' codes (point-to-point
sends, chunk by chunk) and writes; every rank reads the same checkpoint and takes its
own chunks. A checkpoint records the world size, and resumes only at the same one
(the all-reduced sums, and so the dictionary, depend on it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from saekit.fileio import atomic_directory

FORMAT = 1
TENSORS, META = "state.safetensors", "state.json"


def fingerprint(cfg: Any, seed: int, n: int, head: Tensor, world: int) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this fit: the config (kind, sizes,
    every option with its default filled in), seed, token count, a digest of the data's
    first rows ``head`` and the world size (as JSON would give it back)."""
    head = head.to("cpu", torch.float32).contiguous()
    fit = {"format": FORMAT, "kind": cfg.kind, "d_in": cfg.d_in, "d_dict": cfg.d_dict, "k": cfg.k,
           "options": cfg.options, "seed": seed, "n_tokens": n,
           "data_head_sha256": hashlib.sha256(head.numpy().tobytes()).hexdigest(), "world": world}
    return json.loads(json.dumps(fit))


def load(path: Path, expect: dict[str, Any], device: torch.device) -> tuple[dict, Callable] | None:
    """The checkpoint's JSON state and ``get(name)``, which gives a saved tensor (None if
    absent) with the memory layout it had, or None when ``path`` holds no checkpoint.
    Raises ValueError naming ``path`` when it is unreadable, not a checkpoint, or from a
    different fit.

    The layout matters: the dictionary solve leaves ``W`` column-major, and a sum over
    ``W * S`` adds in another order when ``W`` is row-major, which changes the loss's
    last bits (so the history, and in a tie the stopping pass)."""
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return None
    if not (path / META).is_file():
        raise ValueError(f"checkpoint {path} exists but is not an SNMF checkpoint (no {META}); "
                         "name a new or empty directory")
    try:
        meta = json.loads((path / META).read_text())
        tensors = safe_open(str(path / TENSORS), framework="pt", device=str(device))
    except (OSError, ValueError, SafetensorError) as e:
        raise ValueError(f"checkpoint {path} cannot be read ({e})") from e
    saved = meta.get("fit", {})
    differ = [k for k in expect if saved.get(k) != expect[k]]
    if differ:
        what = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this fit {expect[k]!r}" for k in differ)
        raise ValueError(f"checkpoint {path} is from a different fit ({what}); "
                         "resume with the same arguments or name another checkpoint directory")
    strides = meta.get("strides", {})

    def get(name: str) -> Tensor | None:
        if name not in tensors.keys():
            return None
        t = tensors.get_tensor(name)
        st = strides.get(name)
        if st is None or tuple(st) == t.stride() or 0 in st or t.numel() == 0:
            return t
        return torch.empty_strided(t.shape, st, dtype=t.dtype, device=t.device).copy_(t)

    return meta, get


def gather_codes(codes: Any, chunks: list[tuple[int, int, int]], rank: int, world: int,
                 dtype: torch.dtype) -> dict[str, Tensor]:
    """Every chunk's codes on rank 0 (``codes.{i}``, in ``dtype``); other ranks send theirs
    and get an empty dict. Chunk ``i`` lives on rank ``i % world`` (``chunks[rank::world]``)."""
    out: dict[str, Tensor] = {}
    for i, lo, hi in chunks:
        owner = i % world
        if owner == rank:
            G = codes.get(i).to("cpu", torch.float32)
            if rank == 0:
                out[f"codes.{i}"] = G.to(dtype)
            else:
                dist.send(G.contiguous(), 0)
        elif rank == 0:
            G = torch.empty(hi - lo, codes.d_dict, dtype=torch.float32)
            dist.recv(G, owner)
            out[f"codes.{i}"] = G.to(dtype)
    return out


def save(path: Path, meta: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Write the state atomically (call on rank 0 only), with each tensor's strides so
    :func:`load` gives it back in the same layout."""
    meta = {**meta, "strides": {k: list(v.stride()) for k, v in tensors.items()}}
    with atomic_directory(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
