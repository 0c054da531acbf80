"""Live activations for training: model → harvest → shuffle buffer, the LM running ahead.

A :class:`LiveStream` yields shuffled ``[batch, d]`` batches of one hook's activations
straight from the model. A background thread runs the LM forward and the buffer
ahead of the consumer (a bounded queue), so on a GPU neither waits for the other.
The sequence of batches is a function of the tokens and the seed alone, which is
what makes a resumed run exact: it replays the stream up to its step (LM forwards
without SAE steps) instead of storing the buffer.

Several hooks share one harvest through :meth:`LiveStream.together`: one LM forward
fills one row-aligned buffer, and each hook's stream serves its columns. Their
trainers advance in lockstep (``saekit.training.train_together``), so only the
current batch is held.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from saekit.activations.buffer import ShuffleBuffer
from saekit.activations.cache import ActivationCache, CacheRows
from saekit.activations.harvest import iter_harvest
from saekit.data import token_mask
from saekit.models import HookedModel, hook_width

_END = object()


class _Harvest:
    """One shuffled harvest of several hooks, served batch by batch to any number of readers.

    ``get(step)`` returns the ``step``-th batch (a dict over hooks). Readers that move
    forward together cost one LM pass; a reader that goes back restarts the stream
    and replays it (correct, but a second pass).
    """

    def __init__(self, model: HookedModel, hooks: list[str], tokens: Tensor, batch_size: int, buffer_bytes: int,
                 seed: int, lm_batch: int, prefetch: int):
        self.model, self.hooks, self.tokens = model, hooks, tokens
        self.batch_size, self.buffer_bytes, self.seed = batch_size, buffer_bytes, seed
        self.lm_batch, self.prefetch = lm_batch, prefetch
        self._it: Iterator[dict[str, Tensor]] | None = None
        self._next = 0
        self._current: tuple[int, dict[str, Tensor]] | None = None

    def get(self, step: int) -> dict[str, Tensor] | None:
        """Batch ``step``, or None past the end."""
        if self._current is not None and self._current[0] == step:
            return self._current[1]
        if self._it is None or step < self._next:
            self.close()
            self._it, self._next = self.batches(skip=step), step
        while self._next < step:
            if next(self._it, None) is None:
                return None
            self._next += 1
        b = next(self._it, None)
        self._next += 1
        self._current = None if b is None else (step, b)
        return b

    def close(self) -> None:
        """Stop the prefetch thread (the next ``get`` restarts where it is asked)."""
        if self._it is not None:
            self._it.close()
        self._it, self._current = None, None

    def sample(self, hook: str, n: int) -> Tensor:
        """The first ``n`` activations of ``hook`` in harvest order (initialisation statistics)."""
        rows, got = [], 0
        for acts in iter_harvest(self.model, [hook], self.tokens, self.lm_batch, device="cpu"):
            rows.append(acts[hook])
            got += len(rows[-1])
            if got >= n:
                break
        return torch.cat(rows)[:n]

    def batches(self, skip: int = 0) -> Iterator[dict[str, Tensor]]:
        """Every batch in order, after replaying and dropping the first ``skip``."""
        it = iter(ShuffleBuffer(iter_harvest(self.model, self.hooks, self.tokens, self.lm_batch, device="cpu"),
                                self.batch_size, memory_bytes=self.buffer_bytes, seed=self.seed, drop_last=True))
        for _ in range(skip):
            next(it)
        if not self.prefetch:
            yield from it
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def run() -> None:
            try:
                for b in it:
                    while not stop.is_set():
                        try:
                            q.put(b, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(_END)
            except BaseException as e:  # surface harvest errors (NaN, ...) in the consumer
                q.put(e)

        t = threading.Thread(target=run, name="saekit-lm-prefetch", daemon=True)
        t.start()
        try:
            while (b := q.get()) is not _END:
                if isinstance(b, BaseException):
                    raise b
                yield b
        finally:
            stop.set()
            t.join(timeout=10)


class LiveStream:
    """Shuffled batches of ``hook`` activations harvested from ``model`` on ``tokens``.

    Parameters
    ----------
    model, hook, tokens
        What to harvest (``tokens`` from ``saekit.load_tokens``).
    batch_size
        Rows per served batch.
    buffer_bytes
        Memory budget of the shuffle buffer (shared by all hooks of a group).
    seed
        Seeds the buffer's shuffles.
    lm_batch
        Windows per LM forward.
    prefetch
        Batches the background thread may run ahead (0: no thread).
    """

    def __init__(self, model: HookedModel, hook: str, tokens: Tensor, batch_size: int, *,
                 buffer_bytes: int = 1 << 30, seed: int = 0, lm_batch: int = 32, prefetch: int = 4,
                 _source: _Harvest | None = None):
        self.model, self.hook, self.tokens, self.batch_size = model, hook, tokens, batch_size
        self.source = _source or _Harvest(model, [hook], tokens, batch_size, buffer_bytes, seed, lm_batch,
                                          prefetch)
        self.shape = (self._count(), hook_width(model, hook))
        self.ndim = 2

    @classmethod
    def together(cls, model: HookedModel, hooks: Sequence[str], tokens: Tensor, batch_size: int, *,
                 buffer_bytes: int = 1 << 30, seed: int = 0, lm_batch: int = 32,
                 prefetch: int = 4) -> dict[str, LiveStream]:
        """One stream per hook, all fed by one harvest (one LM forward per window)."""
        hooks = list(dict.fromkeys(hooks))
        source = _Harvest(model, hooks, tokens, batch_size, buffer_bytes, seed, lm_batch, prefetch)
        return {h: cls(model, h, tokens, batch_size, _source=source) for h in hooks}

    def _count(self) -> int:
        return int(token_mask(self.tokens, self.model).sum())

    def __len__(self) -> int:
        return self.shape[0]

    def sample(self, n: int) -> Tensor:
        """The first ``n`` activations in harvest order (for initialisation statistics)."""
        return self.source.sample(self.hook, n)

    def batches(self, skip: int = 0) -> Iterator[Tensor]:
        """Every batch in order, from batch ``skip`` on (replaying the stream up to it)."""
        for x, _ in self.paired_batches(None, skip):
            yield x

    def paired_batches(self, other: LiveStream | None, skip: int = 0) -> Iterator[tuple[Tensor, Tensor | None]]:
        """``(this hook's batch, other's batch)`` in order from batch ``skip`` on: the same
        shuffled rows (tokens) of both hooks, which must come from one :meth:`together`
        harvest (a transcoder's input and output). ``other`` None: ``(batch, None)``."""
        if other is not None and other.source is not self.source:
            raise ValueError(f"hooks {self.hook} and {other.hook} are streamed from different harvests, so their "
                             "rows are not the same tokens: open them with LiveStream.together")
        step = skip
        try:
            while (b := self.source.get(step)) is not None:
                yield b[self.hook], None if other is None else b[other.hook]
                step += 1
        finally:
            if len(self.source.hooks) == 1:
                self.source.close()


def as_rows(data: Any) -> Tensor | CacheRows | LiveStream:
    """The row storage a trainer or fitter reads: a tensor or a stream stays as it is; an
    activation cache (a path or an :class:`ActivationCache` of one hook) becomes
    :class:`CacheRows`.

    Parameters
    ----------
    data
        ``[n, d_in]`` tensor, :class:`CacheRows`, :class:`LiveStream`, a cache directory
        or an :class:`ActivationCache`.

    Raises
    ------
    TypeError
        For anything else.
    """
    if isinstance(data, (Tensor, CacheRows, LiveStream)):
        return data
    if isinstance(data, (str, os.PathLike, ActivationCache)):
        return CacheRows(data)
    raise TypeError(f"data must be a tensor [n, d_in] or an activation cache; got {type(data).__name__}")
