"""On-disk activation cache: sharded safetensors files plus a JSON manifest.

Layout of a cache directory ``CACHE/`` (the format and its checks:
:mod:`saekit.activations.layout`)::

    CACHE/manifest.json
    CACHE/<hook>/shard_00000.safetensors    # tensor "activations", shape [n, d]
    CACHE/<hook>/shard_00001.safetensors
    ...

Every hook holds the same number of rows and row ``i`` of every hook is the same
token. The manifest records the model, processing, data source, dtype, token
count and, for every shard, its row count and sha256. Shards are read
memory-mapped; a shard's hash is checked the first time this process reads it,
and :meth:`ActivationCache.verify` checks all of them.

A cache is written by :class:`CacheWriter` inside a sibling temporary directory
and renamed into place only once the manifest is written, so a crashed or
interrupted harvest never leaves something that looks like a finished cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from saekit.activations.layout import (  # noqa: F401  (FORMAT ... is_int: re-exported, defined here first)
    DTYPE_NAMES,
    DTYPES,
    FORMAT,
    MANIFEST,
    ST_CODES,
    TENSOR,
    VERSION,
    CacheError,
    check_shard_layout,
    is_int,
    resolve_dtype,
    validate_manifest,
)
from saekit.fileio import file_sha256

__all__ = ["ActivationCache", "CacheError", "open_cache"]

# Shards whose hash has been checked in this process. The key includes the file's
# identity and mtime so a replaced or rewritten file is checked again, and the
# expected hash so another manifest naming the same file is checked against its own.
_VERIFIED: set[tuple[Any, ...]] = set()


def _verified_key(path: Path, sha: str) -> tuple[Any, ...]:
    st = path.stat()
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, sha)


def _check_sha(path: Path, sha: str) -> None:
    """Hash the file and compare with the manifest; remember success for this process."""
    key = _verified_key(path, sha)
    got = file_sha256(path)
    if got != sha:
        raise CacheError(f"shard {path}: corrupted (sha256 {got}, manifest says {sha})")
    _VERIFIED.add(key)


def _derived_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed from ``seed`` and ``parts``, independent across parts."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------- reader


class ActivationCache:
    """Read-only view of an activation cache directory.

    Parameters
    ----------
    path
        The cache directory (the one holding ``manifest.json``).

    Attributes
    ----------
    path : Path
    manifest : dict
        The parsed, validated manifest.
    hooks : list[str]
        Hook names, in manifest order.
    n_tokens : int
        Rows per hook.
    dtype : torch.dtype
        dtype of every stored tensor.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CacheError
        If the manifest is missing, unreadable, malformed, or of an unknown format or
        version. Shards are checked lazily, when read, or all at once by :meth:`verify`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no activation cache at {self.path}: path does not exist")
        mpath = self.path / MANIFEST
        try:
            text = mpath.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CacheError(
                f"{mpath}: missing; {self.path} is not a finished activation cache"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise CacheError(f"{mpath}: unreadable ({e})") from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as e:
            raise CacheError(f"{mpath}: not valid JSON ({e})") from None
        validate_manifest(manifest, mpath)
        self.manifest: dict[str, Any] = manifest
        self.hooks: list[str] = list(manifest["hooks"])
        self.n_tokens: int = manifest["n_tokens"]
        self.dtype: torch.dtype = DTYPES[manifest["dtype"]]

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"ActivationCache({str(self.path)!r}, model={m['model']!r}, hooks={self.hooks}, "
            f"n_tokens={self.n_tokens}, dtype={m['dtype']})"
        )

    def _spec(self, hook: str) -> dict[str, Any]:
        try:
            return self.manifest["hooks"][hook]
        except (KeyError, TypeError):
            raise KeyError(
                f"hook {hook!r} is not in cache {self.path}; it has {self.hooks}"
            ) from None

    def d(self, hook: str) -> int:
        """Width of ``hook``'s activations."""
        return self._spec(hook)["d"]

    def n_shards(self, hook: str) -> int:
        """Number of shard files stored for ``hook``."""
        return len(self._spec(hook)["shards"])

    def _shard_info(self, hook: str, i: int) -> tuple[Path, int, int, str]:
        spec = self._spec(hook)
        shards = spec["shards"]
        if not is_int(i) or not 0 <= i < len(shards):
            raise IndexError(f"hook {hook!r} has {len(shards)} shards; no shard {i!r}")
        s = shards[i]
        return self.path / s["file"], s["n_tokens"], spec["d"], s["sha256"]

    def shard(self, hook: str, i: int) -> torch.Tensor:
        """Return shard ``i`` of ``hook`` as a memory-mapped ``[n, d]`` tensor.

        The file's header and size are checked against the manifest on every call,
        and its sha256 on the first read of that file in this process.

        Raises
        ------
        KeyError
            Unknown hook.
        IndexError
            No such shard.
        CacheError
            Missing, truncated, corrupted, or mismatched shard (the message names it).
        """
        path, n, d, sha = self._shard_info(hook, i)
        check_shard_layout(path, n, d, self.dtype)
        if _verified_key(path, sha) not in _VERIFIED:
            _check_sha(path, sha)
        try:
            with safe_open(path, framework="pt") as f:
                x = f.get_tensor(TENSOR)
        except (SafetensorError, OSError) as e:
            raise CacheError(f"shard {path}: unreadable ({e})") from None
        if x.shape != (n, d) or x.dtype != self.dtype:
            raise CacheError(
                f"shard {path}: loaded {tuple(x.shape)} {x.dtype}, expected {(n, d)} {self.dtype}"
            )
        return x

    def iter_batches(
        self,
        hook: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        start: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield ``hook``'s rows in batches of ``batch_size`` (the last may be smaller).

        Parameters
        ----------
        hook
            Hook to read.
        batch_size
            Rows per batch; batches span shard boundaries.
        shuffle
            If true, visit shards in a seeded random order and rows within each
            shard in a seeded random order. This is a cheap, local shuffle: put a
            shuffle buffer behind it when batches must mix many shards.
        seed
            Seed for ``shuffle``; the same seed gives the same order.
        start
            Number of rows of this (possibly shuffled) stream to skip, for resuming.
            Whole shards before ``start`` are not read.

        Raises
        ------
        ValueError
            If ``batch_size < 1`` or ``start`` is outside ``[0, n_tokens]``.
        """
        self._spec(hook)  # fail now, not on the first next()
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not is_int(start) or not 0 <= start <= self.n_tokens:
            raise ValueError(f"start must be in [0, {self.n_tokens}], got {start!r}")
        return self._batches(hook, batch_size, shuffle, seed, start)

    def _shard_order(self, hook: str, shuffle: bool, seed: int) -> list[int]:
        k = self.n_shards(hook)
        if not shuffle:
            return list(range(k))
        g = torch.Generator().manual_seed(_derived_seed(seed, -1))
        return torch.randperm(k, generator=g).tolist()

    def _batches(
        self, hook: str, batch_size: int, shuffle: bool, seed: int, skip: int
    ) -> Iterator[torch.Tensor]:
        pending: list[torch.Tensor] = []
        n_pending = 0
        for i in self._shard_order(hook, shuffle, seed):
            n = self._spec(hook)["shards"][i]["n_tokens"]
            if skip >= n:
                skip -= n
                continue
            x = self.shard(hook, i)
            # Each shard's permutation depends only on (seed, shard), so resuming
            # at any `start` reproduces the original order without replaying it.
            perm = None
            if shuffle:
                g = torch.Generator().manual_seed(_derived_seed(seed, i))
                perm = torch.randperm(n, generator=g)
            pos, skip = skip, 0
            while pos < n:
                take = min(batch_size - n_pending, n - pos)
                rows = x[pos : pos + take] if perm is None else x[perm[pos : pos + take]]
                pos += take
                pending.append(rows)
                n_pending += take
                if n_pending == batch_size:
                    yield pending[0] if len(pending) == 1 else torch.cat(pending)
                    pending, n_pending = [], 0
        if pending:
            yield torch.cat(pending)

    def tensor(self, hook: str) -> torch.Tensor:
        """All of ``hook``'s rows as one in-memory ``[n_tokens, d]`` tensor."""
        parts = [self.shard(hook, i) for i in range(self.n_shards(hook))]
        if not parts:
            return torch.empty(0, self.d(hook), dtype=self.dtype)
        return torch.cat(parts)

    def verify(self) -> list[str]:
        """Check every shard: present, right size, header matching, hash matching.

        Returns
        -------
        list[str]
            One human-readable problem per bad shard; empty when the cache is sound.
        """
        problems = []
        for hook in self.hooks:
            for i in range(self.n_shards(hook)):
                path, n, d, sha = self._shard_info(hook, i)
                try:
                    check_shard_layout(path, n, d, self.dtype)
                    _check_sha(path, sha)
                except CacheError as e:
                    problems.append(str(e))
                except OSError as e:
                    problems.append(f"shard {path}: unreadable ({e})")
        return problems


def open_cache(path: str | os.PathLike[str]) -> ActivationCache:
    """Open the activation cache at ``path`` (see :class:`ActivationCache`)."""
    return ActivationCache(path)


class CacheRows:
    """One hook of a cache as a read-only ``[n_tokens, d]`` row store: ``rows[idx]``
    gathers rows by global index from the memory-mapped shards, so a trainer can draw
    shuffled batches from a cache larger than RAM as it would from a tensor."""

    def __init__(self, cache: ActivationCache | str | os.PathLike[str], hook: str | None = None):
        self.cache = cache if isinstance(cache, ActivationCache) else ActivationCache(cache)
        if hook is None:
            if len(self.cache.hooks) != 1:
                raise ValueError(f"cache {self.cache.path} holds hooks {self.cache.hooks}; name one")
            hook = self.cache.hooks[0]
        self.hook = hook
        sizes = [s["n_tokens"] for s in self.cache._spec(hook)["shards"]]
        self.starts = torch.tensor([0, *sizes]).cumsum(0)
        self.shape = (self.cache.n_tokens, self.cache.d(hook))
        self.ndim = 2
        self._shards: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def _shard(self, i: int) -> torch.Tensor:
        if i not in self._shards:
            self._shards[i] = self.cache.shard(self.hook, i)  # mmap; hash checked on first read
        return self._shards[i]

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows of {self.hook}")
        shard = torch.searchsorted(self.starts, idx, right=True) - 1
        out = torch.empty((len(idx), self.shape[1]), dtype=self.cache.dtype)
        for i in shard.unique().tolist():
            sel = (shard == i).nonzero().squeeze(1)
            out[sel] = self._shard(i)[idx[sel] - self.starts[i]]
        return out
