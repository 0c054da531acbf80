"""The shuffle buffer: every row once, mixed, within its memory budget."""

import pytest
import torch

from saekit.activations import ShuffleBuffer


def stream(n_rows=1000, rows_per_batch=50, d=4):
    for i in range(0, n_rows, rows_per_batch):
        ids = torch.arange(i, min(i + rows_per_batch, n_rows), dtype=torch.float32)
        yield ids[:, None].repeat(1, d)


def served_ids(buf):
    return torch.cat([b[:, 0] for b in buf]).long()


def test_every_row_served_exactly_once():
    ids = served_ids(ShuffleBuffer(stream(), batch_size=32, capacity=200))
    assert sorted(ids.tolist()) == list(range(1000))


def test_statistics_are_preserved_and_order_is_mixed():
    ids = served_ids(ShuffleBuffer(stream(), batch_size=32, capacity=400, seed=1))
    x = ids.float()
    assert x.mean().item() == pytest.approx(499.5)
    # Neighbours in the output are far apart in the input.
    assert (x[1:] - x[:-1]).abs().mean() > 50
    first = ids[:32]
    assert first.float().std() > 50


def test_memory_budget_bounds_what_is_mixed():
    d, cap = 4, 100
    buf = ShuffleBuffer(stream(d=d), batch_size=10, memory_bytes=cap * d * 4, seed=0)
    first = next(iter(buf))[:, 0]
    assert first.max() < cap  # nothing beyond the first `cap` rows was in memory yet
    with pytest.raises(ValueError, match="fewer than 2 batches"):
        list(ShuffleBuffer(stream(d=d), batch_size=64, memory_bytes=cap * d * 4))


def test_dict_batches_stay_aligned():
    src = ({"a": x, "b": 2 * x[:, :2]} for x in stream())
    for batch in ShuffleBuffer(src, batch_size=25, capacity=120):
        assert torch.equal(batch["b"], 2 * batch["a"][:, :2])


def test_seeded_and_drop_last():
    a = served_ids(ShuffleBuffer(stream(), batch_size=64, capacity=300, seed=5))
    b = served_ids(ShuffleBuffer(stream(), batch_size=64, capacity=300, seed=5))
    assert torch.equal(a, b)
    sizes = [len(x) for x in ShuffleBuffer(stream(), batch_size=64, capacity=300, drop_last=True)]
    assert set(sizes) == {64} and sum(sizes) == 1000 // 64 * 64
