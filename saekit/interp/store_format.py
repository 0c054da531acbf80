"""The feature store's files (:mod:`saekit.interp.store`): their names, the schema, and
the checks that reading them makes.

A store is a directory with ``store.safetensors`` (the statistics and example sets) and
``manifest.json`` (what was collected: model, hook, dataset, counts, context, the
histogram's constants, and the sha256 of the tensors file). :func:`read_store` checks the
manifest's fields and the tensors against each other before anything uses them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from safetensors.torch import load
from torch import Tensor

SCHEMA = "saekit.interp.store/1"
MANIFEST = "manifest.json"
TENSORS = "store.safetensors"
#: log10(activation) histogram range and resolution; values outside land in the end bins.
HIST_RANGE = (-4.0, 4.0)
HIST_BINS = 64


def read_store(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(manifest, tensors)`` of the store at ``path``, checked.

    The tensors file must match the manifest's ``tensors_sha256``, and the manifest's
    fields their types and the tensors.

    Raises
    ------
    FileNotFoundError
        When the two files are not there.
    ValueError
        For any other problem, naming the file and the field.
    """
    path = Path(path)
    mfile, tfile = path / MANIFEST, path / TENSORS
    if not mfile.is_file() or not tfile.is_file():
        raise FileNotFoundError(f"{path} is not a feature store: expected {MANIFEST} and {TENSORS}")
    try:
        manifest = json.loads(mfile.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{mfile}: invalid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{mfile}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("schema") != SCHEMA:
        raise ValueError(f"{mfile}: schema {manifest.get('schema')!r}, expected {SCHEMA!r}")

    def bad(name: str, what: str) -> ValueError:
        return ValueError(f"{mfile}: field {name!r} must be {what}, got {manifest.get(name, '<missing>')!r}")

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    sha = manifest.get("tensors_sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise bad("tensors_sha256", "64 lowercase hex digits")
    for name in ("n_tokens", "next_window"):
        if not count(manifest.get(name)):
            raise bad(name, "a non-negative integer")
    for name in ("n_windows", "ctx_len", "top_k", "n_samples", "seed"):
        if name in manifest and not count(manifest[name]):
            raise bad(name, "a non-negative integer")
    if not isinstance(manifest.get("complete"), bool):
        raise bad("complete", "true or false")
    ctx = manifest.get("context")
    if not (isinstance(ctx, list) and len(ctx) == 2 and all(count(v) for v in ctx)):
        raise bad("context", "[left, right], two non-negative integers")
    hist = manifest.get("histogram")
    if hist != [*HIST_RANGE, HIST_BINS] or not count(hist[2]) or any(isinstance(v, bool) for v in hist):
        # collect bins log10(activation) with these constants, and resumes with them
        raise bad("histogram", f"{[*HIST_RANGE, HIST_BINS]} (log10 range and bins of this schema)")
    for name in ("model", "processing", "hook", "dataset", "tokens_sha256", "features_sha256"):
        if name in manifest and manifest[name] is not None and not isinstance(manifest[name], str):
            raise bad(name, "a string or null")
    if "dictionary" in manifest and not isinstance(manifest["dictionary"], dict):
        raise bad("dictionary", "an object")
    try:
        data = tfile.read_bytes()
    except OSError as e:
        raise ValueError(f"{tfile}: unreadable ({e})") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise ValueError(f"{tfile}: sha256 differs from the manifest's tensors_sha256 "
                         "(a truncated or replaced file)")
    try:
        t = load(data)
    except Exception as e:  # the hash matched, so the manifest's sha256 was made for a bad file
        raise ValueError(f"{tfile}: not a readable safetensors file ({e})") from None
    # The manifest against the tensors it describes (its own fields carry no hash).
    need = ("tokens", "features", "count", "hist", "token_count", "top_win", "smp_win", "top_ctx_shape")
    missing = [k for k in need if k not in t]
    if missing:
        raise ValueError(f"{tfile}: missing tensor(s) {missing}")
    tokens, n_f = t["tokens"], len(t["features"])
    checks = [("n_tokens", int(t["token_count"].sum()), manifest["n_tokens"]),
              ("histogram", t["hist"].shape[-1], hist[2]),
              ("top_k", t["top_win"].shape[-1], manifest.get("top_k", t["top_win"].shape[-1])),
              ("n_samples", t["smp_win"].shape[-1], max(manifest.get("n_samples", 1), 1)),
              ("context", int(t["top_ctx_shape"][-1]) if len(t["top_ctx_shape"]) else -1,
               min(ctx[0] + 1 + ctx[1], tokens.shape[-1]) if tokens.ndim == 2 else -1)]
    if tokens.ndim == 2:
        checks += [("n_windows", tokens.shape[0], manifest.get("n_windows", tokens.shape[0])),
                   ("ctx_len", tokens.shape[1], manifest.get("ctx_len", tokens.shape[1]))]
    for name, have, said in checks:
        if have != said:
            raise ValueError(f"{mfile}: field {name!r} says {said}, but {TENSORS} holds {have}; "
                             "the manifest was edited or belongs to another store")
    if tokens.ndim != 2 or manifest["next_window"] > tokens.shape[0] or t["count"].shape != (n_f,):
        raise ValueError(f"{mfile}: field 'next_window' {manifest['next_window']} or the tensors' shapes "
                         f"disagree (tokens {tuple(tokens.shape)}, {n_f} features)")
    return manifest, t
