"""The activation cache's format on disk: its constants, dtypes, manifest and shard checks.

:mod:`saekit.activations.cache` reads caches and :mod:`saekit.activations.cache_writer`
writes them; both build on the format defined here: the manifest's required fields and
their checks (:func:`validate_manifest`), and a shard's safetensors header against the
``[n, d]`` tensor the manifest promises (:func:`check_shard_layout`). Every failure is a
:class:`CacheError` naming the file and what was expected against what was found.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import torch

FORMAT = "saekit-activation-cache"
VERSION = 1
MANIFEST = "manifest.json"
TENSOR = "activations"

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# safetensors' own dtype codes, as they appear in a shard's header.
ST_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}

# safetensors refuses headers above 100 MB; a larger length field means garbage.
MAX_HEADER = 100_000_000
SHA256_RE = re.compile(r"[0-9a-f]{64}")
REQUIRED_FIELDS = {
    "format": str,
    "version": int,
    "model": str,
    "processing": str,
    "data": str,
    "dtype": str,
    "n_tokens": int,
    "created": str,
    "extra": dict,
    "hooks": dict,
}

class CacheError(ValueError):
    """A cache on disk is missing, corrupted, or disagrees with its manifest."""


# --------------------------------------------------------------------------- helpers


def is_int(x: Any) -> bool:
    """An int that is not a bool (manifest fields)."""
    # bool is an int subclass; a manifest saying "d": true is still malformed.
    return isinstance(x, int) and not isinstance(x, bool)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Return the torch dtype for ``dtype`` (a torch dtype or its name)."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPE_NAMES:
        return dtype
    raise ValueError(f"cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def read_shard_header(path: Path, size: int) -> tuple[int, dict[str, Any]]:
    """Parse a shard's safetensors header; return (header length, header dict)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CacheError(f"shard {path}: truncated ({size} bytes, too short for a header)")
        (hlen,) = struct.unpack("<Q", prefix)
        if hlen > MAX_HEADER:
            raise CacheError(f"shard {path}: corrupted header (length field says {hlen} bytes)")
        raw = f.read(hlen)
    if len(raw) < hlen:
        raise CacheError(f"shard {path}: truncated ({size} bytes, header alone needs {8 + hlen})")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"shard {path}: header is not valid JSON ({e}); corrupted") from None
    if not isinstance(header, dict):
        raise CacheError(f"shard {path}: header is not a JSON object; corrupted")
    return hlen, header


def check_shard_layout(path: Path, n: int, d: int, dtype: torch.dtype) -> None:
    """Check a shard exists and its header and size match an [n, d] ``dtype`` tensor.

    Raises
    ------
    CacheError
        Naming the file and what was expected against what was found.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CacheError(f"shard {path}: missing (manifest lists {n} tokens in it)") from None
    hlen, header = read_shard_header(path, size)
    entry = header.get(TENSOR)
    if not isinstance(entry, dict):
        found = sorted(k for k in header if k != "__metadata__")
        raise CacheError(f"shard {path}: expected a tensor named {TENSOR!r}, found {found}")
    want_code, got_code = ST_CODES[dtype], entry.get("dtype")
    if got_code != want_code:
        raise CacheError(
            f"shard {path}: dtype {got_code} but manifest says {DTYPE_NAMES[dtype]} ({want_code})"
        )
    if entry.get("shape") != [n, d]:
        raise CacheError(f"shard {path}: shape {entry.get('shape')} but manifest says {[n, d]}")
    nbytes = n * d * dtype.itemsize
    if entry.get("data_offsets") != [0, nbytes]:
        raise CacheError(
            f"shard {path}: data_offsets {entry.get('data_offsets')}, expected {[0, nbytes]}"
        )
    want_size = 8 + hlen + nbytes
    if size < want_size:
        raise CacheError(f"shard {path}: truncated ({size} bytes, expected {want_size})")
    if size > want_size:
        raise CacheError(f"shard {path}: {size} bytes, expected {want_size} (trailing data)")


# --------------------------------------------------------------------------- manifest


def manifest_error(path: Path, what: str) -> CacheError:
    return CacheError(f"{path}: {what}")


def validate_shard_entries(mpath: Path, hook: str, spec: Any) -> int:
    """Validate one hook's manifest entry; return its total row count."""
    if not isinstance(spec, dict) or not is_int(spec.get("d")) or spec["d"] <= 0:
        raise manifest_error(mpath, f"hook {hook!r} needs a positive integer 'd', found {spec!r}")
    shards = spec.get("shards")
    if not isinstance(shards, list):
        raise manifest_error(mpath, f"hook {hook!r} needs a 'shards' list")
    total = 0
    for i, s in enumerate(shards):
        where = f"hook {hook!r} shard {i}"
        if not isinstance(s, dict):
            raise manifest_error(mpath, f"{where} is not an object")
        f, n, sha = s.get("file"), s.get("n_tokens"), s.get("sha256")
        if not isinstance(f, str) or not f:
            raise manifest_error(mpath, f"{where} needs a 'file' string")
        # A manifest must not point outside its own directory. The check is lexical
        # so a cache assembled from symlinked shards still opens.
        if Path(f).is_absolute() or ".." in Path(f).parts or "\\" in f:
            raise manifest_error(mpath, f"{where} file {f!r} lies outside the cache directory")
        if "\x00" in f:
            raise manifest_error(mpath, f"{where} file {f!r} holds a NUL character")
        # CacheWriter files a hook's shards under a folder named after it; checking that
        # catches a damaged hook name, which would otherwise serve the right rows under
        # another hook's name.
        if Path(f).parent.as_posix() != hook:
            raise manifest_error(mpath, f"{where} file {f!r} is not in the hook's folder {hook!r}/")
        if not is_int(n) or n <= 0:
            raise manifest_error(mpath, f"{where} needs a positive 'n_tokens', found {n!r}")
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise manifest_error(mpath, f"{where} needs a lowercase hex 'sha256', found {sha!r}")
        total += n
    return total


def validate_manifest(m: Any, mpath: Path) -> None:
    """Raise CacheError unless ``m`` is a well-formed manifest for this format."""
    if not isinstance(m, dict):
        raise manifest_error(mpath, "manifest is not a JSON object")
    if m.get("format") != FORMAT:
        raise manifest_error(mpath, f"format {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("version") != VERSION or not is_int(m.get("version")):
        raise manifest_error(
            mpath, f"unsupported version {m.get('version')!r} (this saekit reads version {VERSION})"
        )
    for key, typ in REQUIRED_FIELDS.items():
        if key not in m:
            raise manifest_error(mpath, f"missing field {key!r}")
        ok = is_int(m[key]) if typ is int else isinstance(m[key], typ)
        if not ok:
            raise manifest_error(
                mpath, f"field {key!r} should be {typ.__name__}, found {m[key]!r}"
            )
    if m["dtype"] not in DTYPES:
        raise manifest_error(mpath, f"dtype {m['dtype']!r}, expected one of {sorted(DTYPES)}")
    if m["n_tokens"] < 0:
        raise manifest_error(mpath, f"n_tokens {m['n_tokens']} is negative")
    ctx = m.get("ctx_len", None)
    if ctx is not None and (not is_int(ctx) or ctx <= 0):
        raise manifest_error(mpath, f"ctx_len should be a positive integer or null, found {ctx!r}")
    if not m["hooks"]:
        raise manifest_error(mpath, "manifest lists no hooks")
    for hook, spec in m["hooks"].items():
        total = validate_shard_entries(mpath, hook, spec)
        if total != m["n_tokens"]:
            raise manifest_error(
                mpath,
                f"hook {hook!r} shards hold {total} tokens in all, but n_tokens is {m['n_tokens']}",
            )
