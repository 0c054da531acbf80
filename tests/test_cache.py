"""Tests for the on-disk activation cache (saekit.activations.cache)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saekit.activations import (
    ActivationCache,
    CacheError,
    CacheWriter,
    open_cache,
)

H0, H1 = "blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"
HOOKS = {H0: 8, H1: 12}
SIZES = [5, 7, 20, 0, 1, 9]  # 42 rows -> shards of 16, 16, 10 with shard_tokens=16
N = sum(SIZES)
META = {"model": "toy", "processing": "raw", "data": "synthetic"}


def _batches(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{h: torch.randn(n, d, generator=g) for h, d in HOOKS.items()} for n in SIZES]


def _write(path: Path, dtype=torch.float32, seed: int = 0, **kw) -> tuple[ActivationCache, dict]:
    """Write a three-shard cache; return the reader and the expected tensors."""
    batches = _batches(seed)
    kw = {**META, "shard_tokens": 16, **kw}
    with CacheWriter(path, HOOKS, dtype=dtype, **kw) as w:
        for b in batches:
            w.add(b)
    expected = {h: torch.cat([b[h] for b in batches]).to(dtype) for h in HOOKS}
    return open_cache(path), expected


def _bits(x: torch.Tensor) -> torch.Tensor:
    """Reinterpret as integers so comparisons are bit-exact (NaN included)."""
    return x.view({4: torch.int32, 2: torch.int16}[x.element_size()])


def _shard_path(cache: ActivationCache, hook: str, i: int) -> Path:
    return cache.path / cache.manifest["hooks"][hook]["shards"][i]["file"]


def _edit_manifest(cache: ActivationCache, edit) -> None:
    mpath = cache.path / "manifest.json"
    m = json.loads(mpath.read_text())
    edit(m)
    mpath.write_text(json.dumps(m))


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_bit_exact(tmp_path, dtype):
    batches = _batches()
    batches[2][H0][3, 1] = float("nan")  # not checked by the cache, and kept as-is
    batches[2][H1][0, 0] = float("inf")
    w = CacheWriter(tmp_path / "c", HOOKS, dtype=dtype, shard_tokens=16, **META)
    for b in batches:
        w.add(b)
    cache = w.close()
    assert cache.hooks == [H0, H1] and cache.n_tokens == N and cache.dtype == dtype
    for h, d in HOOKS.items():
        want = torch.cat([b[h] for b in batches]).to(dtype)
        got = cache.tensor(h)
        assert got.shape == (N, d) and got.dtype == dtype
        assert torch.equal(_bits(got), _bits(want))
        assert [cache.shard(h, i).shape[0] for i in range(cache.n_shards(h))] == [16, 16, 10]
        # Shards are plain safetensors files that the library itself loads.
        st = load_file(_shard_path(cache, h, 2))
        assert list(st) == ["activations"] and torch.equal(
            _bits(st["activations"]), _bits(want[32:])
        )
    assert cache.verify() == []


def test_exact_multiple_of_shard_tokens_and_single_hook(tmp_path):
    x = torch.randn(32, 3)
    with CacheWriter(tmp_path / "c", {"h": 3}, shard_tokens=16, **META) as w:
        w.add({"h": x})
    cache = open_cache(tmp_path / "c")
    assert [s["n_tokens"] for s in cache.manifest["hooks"]["h"]["shards"]] == [16, 16]
    assert torch.equal(cache.tensor("h"), x)


def test_writer_copies_input(tmp_path):
    x = torch.ones(4, 3)
    w = CacheWriter(tmp_path / "c", {"h": 3}, shard_tokens=16, **META)
    w.add({"h": x})
    x.zero_()  # a harvest loop reusing its buffer must not change what was added
    assert torch.equal(w.close().tensor("h"), torch.ones(4, 3))


def test_manifest_fields(tmp_path):
    cache, _ = _write(tmp_path / "c", dtype=torch.bfloat16, ctx_len=128, extra={"seed": 3})
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m == cache.manifest
    assert m["format"] == "saekit-activation-cache" and m["version"] == 1
    assert (m["model"], m["processing"], m["data"]) == ("toy", "raw", "synthetic")
    assert m["dtype"] == "bfloat16" and m["n_tokens"] == N and m["ctx_len"] == 128
    assert m["extra"] == {"seed": 3} and isinstance(m["created"], str)
    assert list(m["hooks"]) == [H0, H1]
    for h, d in HOOKS.items():
        spec = m["hooks"][h]
        assert spec["d"] == d and cache.d(h) == d
        assert [s["file"] for s in spec["shards"]] == [
            f"{h}/shard_{i:05d}.safetensors" for i in range(3)
        ]
        assert sum(s["n_tokens"] for s in spec["shards"]) == N
        assert all(len(s["sha256"]) == 64 for s in spec["shards"])
    assert "toy" in repr(cache) and str(N) in repr(cache)


def test_empty_cache(tmp_path):
    with CacheWriter(tmp_path / "c", {"h": 3}, **META):
        pass
    cache = open_cache(tmp_path / "c")
    assert cache.n_tokens == 0 and cache.tensor("h").shape == (0, 3)
    assert list(cache.iter_batches("h", 4)) == [] and cache.verify() == []


# ---------------------------------------------------------------------- iteration


def test_iter_batches_in_order(tmp_path):
    cache, want = _write(tmp_path / "c")
    batches = list(cache.iter_batches(H1, 5))
    assert [len(b) for b in batches] == [5] * 8 + [2]  # batches span shard boundaries
    assert torch.equal(torch.cat(batches), want[H1])


def test_iter_batches_shuffled_is_seeded_permutation(tmp_path):
    cache, want = _write(tmp_path / "c")
    a = torch.cat(list(cache.iter_batches(H0, 7, shuffle=True, seed=1)))
    assert a.shape == want[H0].shape and not torch.equal(a, want[H0])
    # Every row exactly once: match rows back to their index in the original.
    idx = [int((want[H0] == row).all(1).nonzero()) for row in a]
    assert sorted(idx) == list(range(N))
    assert torch.equal(a, torch.cat(list(cache.iter_batches(H0, 7, shuffle=True, seed=1))))
    b = torch.cat(list(cache.iter_batches(H0, 7, shuffle=True, seed=2)))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("start", [0, 3, 16, 17, 41, N])
def test_iter_batches_start_resumes(tmp_path, shuffle, start):
    cache, _ = _write(tmp_path / "c")
    full = torch.cat(list(cache.iter_batches(H1, 6, shuffle=shuffle, seed=5)))
    rest = list(cache.iter_batches(H1, 6, shuffle=shuffle, seed=5, start=start))
    assert all(len(b) == 6 for b in rest[:-1])
    got = torch.cat(rest) if rest else full[:0]
    assert torch.equal(got, full[start:])


def test_iter_batches_bad_arguments(tmp_path):
    cache, _ = _write(tmp_path / "c")
    with pytest.raises(ValueError, match="batch_size"):
        cache.iter_batches(H0, 0)
    with pytest.raises(ValueError, match="start"):
        cache.iter_batches(H0, 4, start=N + 1)
    with pytest.raises(KeyError, match=H1):  # the message lists the cache's hooks
        cache.iter_batches("blocks.9.hook_resid_post", 4)
    with pytest.raises(KeyError, match="blocks.9"):
        cache.d("blocks.9.hook_resid_post")
    with pytest.raises(IndexError):
        cache.shard(H0, 3)


# ---------------------------------------------------------------------- corruption


def test_flipped_byte_is_reported_as_corrupted(tmp_path):
    cache, _ = _write(tmp_path / "c")
    path = _shard_path(cache, H1, 1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 + 40] ^= 0x01
    path.write_bytes(bytes(data))
    cache = open_cache(tmp_path / "c")
    cache.shard(H1, 0)  # other shards still read
    with pytest.raises(CacheError, match=r"shard_00001.*corrupted"):
        cache.shard(H1, 1)
    with pytest.raises(CacheError, match=re.escape(str(path))):
        list(cache.iter_batches(H1, 8))
    problems = cache.verify()
    assert len(problems) == 1 and str(path) in problems[0] and "corrupted" in problems[0]


def _flip_keep_mtime(path: Path, mtime_ns: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 + 40] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_hash_is_checked_on_first_read_per_file_version(tmp_path):
    cache, _ = _write(tmp_path / "c")
    path = _shard_path(cache, H0, 0)
    mtime = path.stat().st_mtime_ns
    cache.shard(H0, 0)  # hashed and remembered
    _flip_keep_mtime(path, mtime)
    # Same size and mtime: later reads in this process trust the first check ...
    cache.shard(H0, 0)
    # ... while verify() always rehashes,
    assert "corrupted" in " ".join(cache.verify())
    # and a file with a new mtime counts as a new file and is checked again.
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    with pytest.raises(CacheError, match="corrupted"):
        open_cache(tmp_path / "c").shard(H0, 0)


@pytest.mark.parametrize("keep", [4, 100, "half"])
def test_truncated_shard_is_named(tmp_path, keep):
    cache, _ = _write(tmp_path / "c")
    path = _shard_path(cache, H0, 2)
    size = path.stat().st_size
    os.truncate(path, size // 2 if keep == "half" else keep)
    with pytest.raises(CacheError, match=rf"{re.escape(str(path))}.*truncated"):
        cache.shard(H0, 2)
    problems = cache.verify()
    assert len(problems) == 1 and str(path) in problems[0] and "truncated" in problems[0]


def test_missing_shard_is_named(tmp_path):
    cache, _ = _write(tmp_path / "c")
    path = _shard_path(cache, H0, 0)
    path.unlink()
    with pytest.raises(CacheError, match=rf"{re.escape(str(path))}.*missing"):
        cache.tensor(H0)
    assert torch.equal(cache.shard(H1, 0), cache.shard(H1, 0))
    problems = cache.verify()
    assert len(problems) == 1 and str(path) in problems[0] and "missing" in problems[0]


def test_manifest_shape_mismatch_is_named(tmp_path):
    cache, _ = _write(tmp_path / "c")
    _edit_manifest(cache, lambda m: m["hooks"][H0].update(d=9))
    cache = open_cache(tmp_path / "c")
    path = _shard_path(cache, H0, 0)
    with pytest.raises(CacheError, match=rf"{re.escape(str(path))}.*shape \[16, 8\].*\[16, 9\]"):
        cache.shard(H0, 0)
    assert len(cache.verify()) == 3  # every shard of that hook


def test_manifest_dtype_mismatch_is_named(tmp_path):
    cache, _ = _write(tmp_path / "c")
    _edit_manifest(cache, lambda m: m.update(dtype="float16"))
    cache = open_cache(tmp_path / "c")
    with pytest.raises(
        CacheError, match=rf"{re.escape(str(_shard_path(cache, H1, 0)))}.*F32.*float16"
    ):
        cache.shard(H1, 0)


def test_shard_token_counts_must_sum_to_n_tokens(tmp_path):
    cache, _ = _write(tmp_path / "c")
    _edit_manifest(cache, lambda m: m["hooks"][H1]["shards"][2].update(n_tokens=11))
    with pytest.raises(CacheError, match=rf"manifest.json.*{H1}.*43.*{N}"):
        open_cache(tmp_path / "c")
    # Consistent totals but a shard's row count off: caught when that shard is read.
    _edit_manifest(cache, lambda m: m.update(n_tokens=43))
    _edit_manifest(cache, lambda m: m["hooks"][H0]["shards"][2].update(n_tokens=11))
    cache = open_cache(tmp_path / "c")
    with pytest.raises(CacheError, match=r"shard_00002.*shape \[10, 12\].*\[11, 12\]"):
        cache.shard(H1, 2)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format="other"), "format"),
        (lambda m: m.update(version=2), "unsupported version 2"),
        (lambda m: m.pop("model"), "missing field 'model'"),
        (lambda m: m.update(dtype="int8"), "dtype 'int8'"),
        (lambda m: m["hooks"][H0]["shards"][0].update(sha256="xyz"), "sha256"),
        (lambda m: m["hooks"][H0]["shards"][0].update(file="../x"), "outside"),
    ],
)
def test_malformed_manifest(tmp_path, edit, message):
    cache, _ = _write(tmp_path / "c")
    _edit_manifest(cache, edit)
    with pytest.raises(CacheError, match=message) as e:
        open_cache(tmp_path / "c")
    assert "manifest.json" in str(e.value)


def test_missing_or_unparsable_manifest(tmp_path):
    cache, _ = _write(tmp_path / "c")
    mpath = tmp_path / "c" / "manifest.json"
    mpath.write_text("{not json")
    with pytest.raises(CacheError, match="manifest.json.*not valid JSON"):
        open_cache(cache.path)
    mpath.unlink()
    with pytest.raises(CacheError, match="manifest.json.*missing"):
        open_cache(cache.path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_cache(tmp_path / "nowhere")


# ---------------------------------------------------------------------- atomicity


def test_exception_in_writer_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with CacheWriter(tmp_path / "c", HOOKS, shard_tokens=4, **META) as w:
            for b in _batches():
                w.add(b)  # several shards already on disk in the temporary directory
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="aborted"):
        w.add(_batches()[0])


def test_existing_path_without_overwrite(tmp_path):
    _write(tmp_path / "c")
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path / "c"))):
        CacheWriter(tmp_path / "c", HOOKS, **META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_overwrite_replaces(tmp_path):
    _write(tmp_path / "c", seed=0)
    cache, want = _write(tmp_path / "c", seed=1, overwrite=True, shard_tokens=32)
    assert torch.equal(cache.tensor(H0), want[H0]) and cache.n_shards(H0) == 2
    assert not (tmp_path / "c" / H0 / "shard_00002.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # old copy deleted


def test_overwrite_refuses_a_directory_that_is_not_a_cache(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an activation cache"):
        CacheWriter(tmp_path / "c", HOOKS, overwrite=True, **META)
    assert (tmp_path / "c" / "notes.txt").read_text() == "keep me"


def test_path_created_while_writing_is_not_clobbered(tmp_path):
    w = CacheWriter(tmp_path / "c", {"h": 3}, **META)
    w.add({"h": torch.zeros(2, 3)})
    _write(tmp_path / "c")  # another writer finished first
    with pytest.raises(FileExistsError):
        w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert open_cache(tmp_path / "c").hooks == [H0, H1]


# ---------------------------------------------------------------------- writer validation


def _writer(tmp_path: Path) -> CacheWriter:
    return CacheWriter(tmp_path / "c", HOOKS, **META)


def test_add_wrong_width_names_hook(tmp_path):
    w = _writer(tmp_path)
    with pytest.raises(ValueError, match=rf"{H1}.*\[n, 12\].*\[3, 11\]"):
        w.add({H0: torch.zeros(3, 8), H1: torch.zeros(3, 11)})
    with pytest.raises(ValueError, match=rf"{H0}.*\[3\]"):
        w.add({H0: torch.zeros(3), H1: torch.zeros(3, 12)})
    w.abort()


def test_add_wrong_hooks_lists_declared(tmp_path):
    w = _writer(tmp_path)
    with pytest.raises(ValueError, match=rf"{H0}.*{H1}.*missing \['{H1}'\].*unknown \['x'\]"):
        w.add({H0: torch.zeros(3, 8), "x": torch.zeros(3, 12)})
    with pytest.raises(ValueError, match=rf"missing \['{H1}'\]"):
        w.add({H0: torch.zeros(3, 8)})
    w.abort()


def test_add_mismatched_rows_names_hooks(tmp_path):
    w = _writer(tmp_path)
    with pytest.raises(ValueError, match=rf"same number of rows.*{H0}.*3.*{H1}.*4"):
        w.add({H0: torch.zeros(3, 8), H1: torch.zeros(4, 12)})
    with pytest.raises(ValueError, match=rf"{H0}.*floating"):
        w.add({H0: torch.zeros(3, 8, dtype=torch.int64), H1: torch.zeros(3, 12)})
    w.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"hooks": {}}, ValueError),
        ({"hooks": {"a/b": 3}}, ValueError),
        ({"hooks": {"h": 0}}, ValueError),
        ({"dtype": torch.int8}, ValueError),
        ({"shard_tokens": 0}, ValueError),
        ({"extra": {"t": torch.zeros(1)}}, TypeError),
    ],
)
def test_writer_rejects_bad_arguments_before_writing(tmp_path, kwargs, error):
    args = {"hooks": {"h": 3}, **META, **kwargs}
    with pytest.raises(error):
        CacheWriter(tmp_path / "c", **args)
    assert list(tmp_path.iterdir()) == []
