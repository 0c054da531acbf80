"""A shuffle buffer: mixes a stream of activation batches, sized by a memory budget.

Activations from one window are strongly correlated, so a trainer fed them in
harvest order sees batches of near-duplicates. The buffer holds up to ``capacity``
rows, shuffles them and serves a fraction (``serve_fraction``), keeps the rest and
refills; SAELens' mixing buffer does the same with a half. Every row that enters
is served exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def _nbytes_per_row(batch: dict[str, torch.Tensor]) -> int:
    return sum(x.shape[1] * x.element_size() for x in batch.values())


class ShuffleBuffer:
    """Shuffle rows of a stream of ``Tensor[n, d]`` or ``{hook: Tensor[n, d]}`` batches.

    Parameters
    ----------
    source
        Iterable of batches; dict batches keep their hooks row-aligned.
    batch_size
        Rows per served batch.
    memory_bytes
        Budget for the buffer's storage; the capacity in rows is derived from the
        first batch's row size. Ignored when ``capacity`` is given.
    capacity
        Rows held at once (at least ``2 * batch_size``).
    serve_fraction
        Fraction of the shuffled buffer served before refilling; lower mixes more.
    seed
        Seeds the shuffles.
    drop_last
        Drop the last, smaller batch when the source ends.
    """

    def __init__(self, source: Iterable[Any], batch_size: int, *, memory_bytes: int = 1 << 30,
                 capacity: int | None = None, serve_fraction: float = 0.5, seed: int = 0,
                 drop_last: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 < serve_fraction <= 1:
            raise ValueError(f"serve_fraction must be in (0, 1], got {serve_fraction}")
        self.source = source
        self.batch_size = batch_size
        self.memory_bytes = memory_bytes
        self.capacity = capacity
        self.serve_fraction = serve_fraction
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def _capacity(self, first: dict[str, torch.Tensor]) -> int:
        cap = self.capacity or self.memory_bytes // max(1, _nbytes_per_row(first))
        if cap < 2 * self.batch_size:
            raise ValueError(f"shuffle buffer holds {cap} rows, fewer than 2 batches of "
                             f"{self.batch_size}: raise memory_bytes or capacity")
        return int(cap)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.source)
        first = next(it, None)
        if first is None:
            return
        plain = isinstance(first, torch.Tensor)
        wrap = (lambda b: {"": b}) if plain else (lambda b: b)
        first = wrap(first)
        cap = self._capacity(first)
        store = {h: torch.empty((cap, x.shape[1]), dtype=x.dtype, device=x.device) for h, x in first.items()}
        pending: dict[str, torch.Tensor] | None = first
        n = 0
        exhausted = False
        while True:
            # Fill.
            while n < cap and not exhausted:
                if pending is None:
                    nxt = next(it, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending = wrap(nxt)
                take = min(cap - n, len(next(iter(pending.values()))))
                for h, x in pending.items():
                    store[h][n:n + take] = x[:take]
                n += take
                rest = {h: x[take:] for h, x in pending.items()}
                pending = rest if len(next(iter(rest.values()))) else None
            if n == 0:
                break
            # Shuffle, serve a fraction (everything once the source is done), keep the rest.
            perm = torch.randperm(n, generator=self.generator).to(next(iter(store.values())).device)
            if exhausted:
                n_serve = n
            else:  # whole batches only, so no row waits in a partial batch
                n_serve = max(self.batch_size, int(n * self.serve_fraction) // self.batch_size * self.batch_size)
            served = {h: s[perm[:n_serve]] for h, s in store.items()}
            kept = perm[n_serve:]
            for s in store.values():
                s[:len(kept)] = s[kept]
            n = len(kept)
            for i in range(0, n_serve, self.batch_size):
                if i + self.batch_size > n_serve and self.drop_last:
                    break
                batch = {h: x[i:i + self.batch_size] for h, x in served.items()}
                yield batch[""] if plain else batch
