"""Writing an activation cache, atomically (the reader: ``cache.py``; the format: ``layout.py``)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import struct
import sys
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from saekit.activations.cache import ActivationCache
from saekit.activations.layout import (
    DTYPE_NAMES,
    FORMAT,
    MANIFEST,
    ST_CODES,
    TENSOR,
    VERSION,
    is_int,
    resolve_dtype,
)
from saekit.fileio import (
    clean_stale,
    disk_full_error,
    fsync_dir,
    fsync_file,
    partial_directory,
    publish_directory,
    raising_disk_full,
)

__all__ = ["CacheWriter"]

MAX_IN_FLIGHT = 2
SHARD_BYTES = 64 << 20



def _check_hook_name(hook: Any) -> None:
    """Refuse hook names that cannot serve as one directory name inside the cache."""
    bad = (
        not isinstance(hook, str)
        or hook in ("", ".", "..", MANIFEST)
        or any(c in hook for c in ("/", "\\", "\0"))
    )
    if bad:
        raise ValueError(f"hook name {hook!r} cannot be used as a cache subdirectory")


def _shard_header(n: int, d: int, dtype: torch.dtype) -> bytes:
    """Return a safetensors header (length prefix included) for one [n, d] tensor."""
    nbytes = n * d * dtype.itemsize
    meta = {TENSOR: {"dtype": ST_CODES[dtype], "shape": [n, d], "data_offsets": [0, nbytes]}}
    header = json.dumps(meta, separators=(",", ":")).encode()
    # Pad as safetensors does, so the tensor data starts 8-byte aligned in the mmap.
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


def _write_shard(path: Path, parts: list[torch.Tensor]) -> str:
    """Write the rows of ``parts`` (each ``[n_i, d]``, one dtype) as one safetensors
    tensor and return the file's sha256. The caller fsyncs it (``fsync_file``).

    The file is assembled here rather than with ``safetensors.torch.save`` so the
    bytes are hashed as they are written, straight from the parts: no concatenated
    copy of the shard in memory and no reading the file back.
    """
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; big-endian hosts are unsupported")
    n = sum(p.shape[0] for p in parts)
    head = _shard_header(n, parts[0].shape[1], parts[0].dtype)
    h = hashlib.sha256(head)
    with open(path, "xb") as f:
        f.write(head)
        for p in parts:
            if p.numel():
                # A uint8 view exposes the raw bytes of any dtype (bfloat16 included).
                data = memoryview(p.contiguous().view(torch.uint8).numpy())
                f.write(data)
                h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------- writer


def _replaceable(path: Path) -> bool:
    """Whether ``overwrite`` may delete ``path``: an activation cache or an empty dir.

    This keeps a mistyped ``path`` with ``overwrite=True`` from deleting an
    unrelated directory.
    """
    if not path.is_dir() or path.is_symlink():
        return False
    return (path / MANIFEST).is_file() or not any(path.iterdir())


class CacheWriter:
    """Write an activation cache, atomically.

    Everything is written into a sibling temporary directory
    (``.CACHE.partial-<pid>-<random>``); :meth:`close` writes the manifest last and
    renames the directory into place (replacing an old cache in one atomic step on
    Linux). Used as a context manager, an exception in the block removes the temporary
    directory and publishes nothing. Without one, call :meth:`abort` on failure (a
    failed shard write aborts by itself). A writer killed outright (SIGKILL) leaves its
    temporary directory behind; the next writer of the same ``path`` removes those of
    dead processes (never a live writer's).

    Parameters
    ----------
    path
        Directory to create.
    hooks
        ``{hook name: width}``; each name becomes a subdirectory.
    model, processing, data
        Provenance recorded in the manifest: model name, activation processing,
        data source.
    dtype
        Storage dtype: ``torch.float32``, ``torch.float16`` or ``torch.bfloat16``
        (or its name).
    shard_tokens
        Rows per shard file (the last shard may hold fewer). Default: as many as
        fit ``SHARD_BYTES`` (64 MiB) for the widest hook, so shard files stay a
        manageable size for any width and a harvest overlaps most of its writing
        (the last shard can only be written after the last forward).
    ctx_len
        Context length the tokens were harvested at, if any.
    extra
        Free JSON-serializable metadata, stored under ``manifest["extra"]``.
    overwrite
        Replace an existing cache at ``path``. The old one is removed only after
        the new one is complete. Only a directory holding a ``manifest.json``, or an
        empty directory, is replaced.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false, or it is not a cache.
    saekit.fileio.DiskFullError
        (an ``OSError``) from :meth:`add` or :meth:`close` when the disk is full or a
        quota is exceeded; the temporary directory is removed and a previous cache at
        ``path`` is left as it was.
    ValueError, TypeError
        For malformed arguments (checked here, before any activation is harvested).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        hooks: Mapping[str, int],
        *,
        model: str,
        processing: str,
        data: str,
        dtype: torch.dtype | str = torch.float32,
        shard_tokens: int | None = None,
        ctx_len: int | None = None,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.hooks: dict[str, int] = self._check_hooks(hooks)
        for name, value in (("model", model), ("processing", processing), ("data", data)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {value!r}")
        self.dtype = resolve_dtype(dtype)
        if shard_tokens is None:
            shard_tokens = max(1, SHARD_BYTES // (max(self.hooks.values()) * self.dtype.itemsize))
        if not is_int(shard_tokens) or shard_tokens < 1:
            raise ValueError(f"shard_tokens must be a positive integer, got {shard_tokens!r}")
        if ctx_len is not None and (not is_int(ctx_len) or ctx_len < 1):
            raise ValueError(f"ctx_len must be a positive integer or None, got {ctx_len!r}")
        extra = dict(extra or {})
        try:
            json.dumps(extra, allow_nan=False)  # fail before harvesting, not at close()
        except (TypeError, ValueError) as e:
            raise TypeError(f"extra must be JSON-serializable: {e}") from None
        self.overwrite = overwrite
        # Writers killed earlier leave temporaries (or, killed mid-replace without an
        # atomic exchange, a parked old cache): clear them before looking at the target.
        clean_stale(self.path.parent, self.path.name)
        self._check_target()
        self.shard_tokens = shard_tokens
        self._meta = {
            "model": model,
            "processing": processing,
            "data": data,
            "ctx_len": ctx_len,
            "extra": extra,
        }
        self._buffers: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        self._n_buffered = 0
        self._n_written = 0
        self._shards: dict[str, list[dict[str, Any]]] = {h: [] for h in self.hooks}
        # Shards are hashed, written and fsync'd on one background thread, so disk I/O
        # overlaps the model forward that produces the next batch. At most
        # MAX_IN_FLIGHT shards per hook wait in memory.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saekit-cache")
        self._in_flight: list[Future] = []
        self._state = "open"
        self._tmp = partial_directory(self.path)
        with raising_disk_full(self.path):
            try:
                for h in self.hooks:
                    (self._tmp / h).mkdir()
            except BaseException:
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise

    @staticmethod
    def _check_hooks(hooks: Mapping[str, int]) -> dict[str, int]:
        if not isinstance(hooks, Mapping) or not hooks:
            raise ValueError(f"hooks must be a non-empty {{name: width}} mapping, got {hooks!r}")
        for hook, d in hooks.items():
            _check_hook_name(hook)
            if not is_int(d) or d < 1:
                raise ValueError(f"hook {hook!r}: width must be a positive integer, got {d!r}")
        return dict(hooks)

    def _check_target(self) -> None:
        if not os.path.lexists(self.path):
            return
        if not self.overwrite:
            raise FileExistsError(f"{self.path} already exists (pass overwrite=True to replace it)")
        if not _replaceable(self.path):
            raise FileExistsError(
                f"{self.path} exists and is not an activation cache (no {MANIFEST}); "
                "refusing to replace it"
            )

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.close()
        return False

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"CacheWriter for {self.path} is {self._state}")

    def _check_batch(self, batch: Mapping[str, torch.Tensor]) -> int:
        """Validate one ``add`` batch; return its row count."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"add() takes a {{hook: tensor}} mapping, got {type(batch).__name__}")
        if set(batch) != set(self.hooks):
            missing = sorted(set(self.hooks) - set(batch))
            unknown = sorted(set(batch) - set(self.hooks))
            raise ValueError(
                f"batch hooks must equal the declared hooks {list(self.hooks)}; "
                f"missing {missing}, unknown {unknown}"
            )
        sizes = {}
        for hook, x in batch.items():
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"hook {hook!r}: expected a tensor, got {type(x).__name__}")
            if x.dim() != 2 or x.shape[1] != self.hooks[hook]:
                raise ValueError(
                    f"hook {hook!r}: expected shape [n, {self.hooks[hook]}], got {list(x.shape)}"
                )
            if not x.is_floating_point():
                raise ValueError(f"hook {hook!r}: expected a floating-point tensor, got {x.dtype}")
            sizes[hook] = x.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"all hooks must have the same number of rows; got {sizes}")
        return next(iter(sizes.values()))

    def add(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Append rows: ``{hook: Tensor[n, d]}`` with the same ``n`` for every hook.

        Tensors are copied to CPU in the cache dtype (so the caller may reuse its
        buffers); every full shard is written as soon as it is complete.
        NaN and inf are not checked here.
        """
        self._require_open()
        n = self._check_batch(batch)
        if n == 0:
            return
        for hook, x in batch.items():
            self._buffers[hook].append(x.detach().to("cpu", self.dtype, copy=True))
        self._n_buffered += n
        if self._n_buffered >= self.shard_tokens:
            try:
                self._flush(final=False)
            except BaseException as e:
                self.abort()  # a shard is missing: nothing written can be published
                err = disk_full_error(e, self.path)
                if err is not None and err is not e:
                    raise err from e
                raise

    def _flush(self, final: bool) -> None:
        """Write buffered rows as full shards (and, if ``final``, the remainder)."""
        S = self.shard_tokens
        n_full = self._n_buffered // S
        n_shards = n_full + (1 if final and self._n_buffered % S else 0)
        if n_shards == 0:
            return
        first = len(self._shards[next(iter(self.hooks))])
        for hook, parts in self._buffers.items():
            for k in range(n_shards):
                shard, n = [], 0
                while parts and n < S:  # split buffered parts at shard boundaries, as views
                    take = min(S - n, parts[0].shape[0])
                    shard.append(parts[0][:take])
                    parts[0] = parts[0][take:]
                    if parts[0].shape[0] == 0:
                        parts.pop(0)
                    n += take
                self._write(hook, first + k, shard)
        written = min(self._n_buffered, n_shards * S)
        self._n_buffered -= written
        self._n_written += written

    def _write(self, hook: str, index: int, rows: list[torch.Tensor]) -> None:
        rel = f"{hook}/shard_{index:05d}.safetensors"
        entry = {"file": rel, "n_tokens": sum(r.shape[0] for r in rows), "sha256": None}
        self._shards[hook].append(entry)

        def write() -> None:
            with raising_disk_full(self.path / rel):
                entry["sha256"] = _write_shard(self._tmp / rel, rows)

        while len(self._in_flight) >= MAX_IN_FLIGHT * len(self.hooks):
            self._in_flight.pop(0).result()  # bounds memory; re-raises a failed write
        self._in_flight.append(self._pool.submit(write))

    def _drain(self) -> None:
        """Wait for every background write; re-raise the first failure."""
        while self._in_flight:
            self._in_flight.pop(0).result()

    def _manifest(self) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        m = self._meta
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": m["model"],
            "processing": m["processing"],
            "data": m["data"],
            "dtype": DTYPE_NAMES[self.dtype],
            "n_tokens": self._n_written,
            "ctx_len": m["ctx_len"],
            "created": now,
            "extra": m["extra"],
            "hooks": {h: {"d": d, "shards": self._shards[h]} for h, d in self.hooks.items()},
        }

    def close(self) -> ActivationCache:
        """Write the last partial shard and the manifest, publish, return a reader.

        Raises
        ------
        FileExistsError
            If ``path`` appeared meanwhile and may not be replaced; nothing is
            published and the temporary directory is removed.
        """
        if self._state == "closed":
            return ActivationCache(self.path)
        self._require_open()
        try:
            self._flush(final=True)
            self._drain()
            self._pool.shutdown()
            # One fsync per shard at the end, not after each write: the kernel writes
            # pages back during the harvest, and nothing is published before this.
            for shards in self._shards.values():
                for entry in shards:
                    fsync_file(self._tmp / entry["file"])
            mpath = self._tmp / MANIFEST
            with open(mpath, "x", encoding="utf-8") as f:
                json.dump(self._manifest(), f, indent=1, allow_nan=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            for h in self.hooks:
                fsync_dir(self._tmp / h)
            fsync_dir(self._tmp)
            self._publish()
        except BaseException as e:
            self.abort()
            err = disk_full_error(e, self.path)
            if err is not None and err is not e:
                raise err from e
            raise
        self._state = "closed"
        return ActivationCache(self.path)

    def _publish(self) -> None:
        """Put the finished temporary directory in the place of ``path`` (replacing an
        old cache, if allowed, in one step where the kernel can) and fsync the parent."""
        self._check_target()
        publish_directory(self._tmp, self.path)

    def abort(self) -> None:
        """Discard everything written so far; the writer cannot be used afterwards."""
        if self._state == "closed":
            return
        self._state = "aborted"
        self._buffers = {h: [] for h in self.hooks}
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._in_flight = []
        shutil.rmtree(self._tmp, ignore_errors=True)
