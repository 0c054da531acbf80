"""Live activations for training: model → harvest → shuffle buffer, the LM running ahead.

A :class:`LiveStream` yields shuffled ``[batch, d]`` batches of one hook's activations
straight from the model. A background thread runs the LM forward and the buffer
ahead of the consumer (a bounded queue), so on a GPU neither waits for the other.
The sequence of batches is a function of the tokens and the seed alone, which is
what makes a resumed run exact: it replays the stream up to its step (LM forwards
without SAE steps) instead of storing the buffer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from saekit.activations.buffer import ShuffleBuffer
from saekit.activations.harvest import iter_harvest
from saekit.models import hook_width

_END = object()


class LiveStream:
    """Shuffled batches of ``hook`` activations harvested from ``model`` on ``tokens``.

    Parameters
    ----------
    model, hook, tokens
        What to harvest (``tokens`` from ``saekit.load_tokens``).
    batch_size
        Rows per served batch.
    buffer_bytes
        Memory budget of the shuffle buffer.
    seed
        Seeds the buffer's shuffles.
    lm_batch
        Windows per LM forward.
    prefetch
        Batches the background thread may run ahead (0: no thread).
    """

    def __init__(self, model: Any, hook: str, tokens: Tensor, batch_size: int, *,
                 buffer_bytes: int = 1 << 30, seed: int = 0, lm_batch: int = 32, prefetch: int = 4):
        self.model, self.hook, self.tokens = model, hook, tokens
        self.batch_size, self.buffer_bytes, self.seed = batch_size, buffer_bytes, seed
        self.lm_batch, self.prefetch = lm_batch, prefetch
        d = hook_width(model, hook)
        self.shape = (self._count(), d)
        self.ndim = 2

    def _count(self) -> int:
        from saekit.data import token_mask

        return int(token_mask(self.tokens, self.model).sum())

    def __len__(self) -> int:
        return self.shape[0]

    def sample(self, n: int) -> Tensor:
        """The first ``n`` activations in harvest order (for initialisation statistics)."""
        rows, got = [], 0
        for acts in iter_harvest(self.model, [self.hook], self.tokens, self.lm_batch, device="cpu"):
            rows.append(acts[self.hook])
            got += len(rows[-1])
            if got >= n:
                break
        return torch.cat(rows)[:n]

    def _batches(self) -> Iterator[Tensor]:
        harvest = (a[self.hook] for a in iter_harvest(self.model, [self.hook], self.tokens, self.lm_batch,
                                                      device="cpu"))
        return iter(ShuffleBuffer(harvest, self.batch_size, memory_bytes=self.buffer_bytes,
                                  seed=self.seed, drop_last=True))

    def batches(self, skip: int = 0) -> Iterator[Tensor]:
        """Every batch in order, after replaying and dropping the first ``skip``."""
        it = self._batches()
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
