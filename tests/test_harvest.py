"""Harvesting: one pass for several hooks, early stop, BOS/padding excluded, NaN detection."""

import pytest
import torch
from conftest import HOOKS

import saekit
from saekit.activations import NonFiniteActivationError, iter_harvest


def test_shapes_and_bos_excluded(demo_model, demo_tokens, demo_acts):
    n = int(saekit.token_mask(demo_tokens, demo_model).sum())
    assert n < demo_tokens.numel()  # BOS (at least) was dropped
    cfg = demo_model.cfg
    assert demo_acts["blocks.1.mlp.hook_post"].shape == (n, cfg.d_mlp)
    assert demo_acts["blocks.1.hook_resid_post"].shape == (n, cfg.d_model)
    assert demo_acts["blocks.2.attn.hook_z"].shape == (n, cfg.n_heads * cfg.d_head)


def test_multi_hook_equals_single_hook_runs(demo_model, demo_tokens, demo_acts):
    for h in HOOKS:
        single = saekit.harvest(demo_model, [h], demo_tokens, batch_size=16)[h]
        assert torch.equal(single, demo_acts[h]), h


def test_matches_a_full_forward_with_run_with_cache(demo_model, demo_tokens):
    toks = demo_tokens[:4]
    mask = saekit.token_mask(toks, demo_model)
    _, cache = demo_model.run_with_cache(toks, names_filter=lambda n: n in HOOKS)
    acts = saekit.harvest(demo_model, HOOKS, toks)
    for h in HOOKS:
        ref = cache[h]
        ref = ref.flatten(2) if ref.ndim == 4 else ref
        torch.testing.assert_close(acts[h], ref[mask], rtol=1e-5, atol=1e-5)


def test_forward_stops_after_the_last_hook(demo_model, demo_tokens):
    fired = []
    point = demo_model.hook_dict["blocks.2.hook_resid_pre"]
    point.add_hook(lambda x, hook: fired.append(1))
    try:
        saekit.harvest(demo_model, ["blocks.1.mlp.hook_post"], demo_tokens[:2])
        assert fired == []
        saekit.harvest(demo_model, ["blocks.2.hook_resid_pre"], demo_tokens[:2])
        assert fired == [1]
    finally:
        point.remove_hooks()


def test_stream_equals_dict(demo_model, demo_tokens, demo_acts):
    parts = list(saekit.harvest(demo_model, HOOKS, demo_tokens, batch_size=16, stream=True))
    assert len(parts) == 3
    for h in HOOKS:
        assert torch.equal(torch.cat([p[h] for p in parts]), demo_acts[h])


def test_dtype_option(demo_model, demo_tokens):
    acts = saekit.harvest(demo_model, ["blocks.0.hook_resid_post"], demo_tokens[:2], dtype=torch.float16)
    assert acts["blocks.0.hook_resid_post"].dtype == torch.float16


def test_nan_is_reported_with_hook_and_batch(demo_model, demo_tokens):
    calls = []

    def poison(x, hook):
        calls.append(1)
        if len(calls) == 2:  # second batch only
            x = x.clone()
            x[0, 3, 0] = float("nan")
            return x
        return None

    point = demo_model.hook_dict["blocks.0.hook_resid_post"]
    point.add_hook(poison)
    try:
        with pytest.raises(NonFiniteActivationError, match=r"blocks\.1\.mlp\.hook_post.*batch 1 \(windows 4:8\)"):
            list(iter_harvest(demo_model, ["blocks.1.mlp.hook_post"], demo_tokens[:12], batch_size=4))
    finally:
        point.remove_hooks()


def test_bad_hooks_and_tokens(demo_model, demo_tokens):
    with pytest.raises(ValueError, match="Valid hooks"):
        saekit.harvest(demo_model, ["blocks.1.mlp.hook_postt"], demo_tokens[:2])
    with pytest.raises(ValueError, match="duplicate"):
        saekit.harvest(demo_model, ["blocks.1.mlp.hook_post"] * 2, demo_tokens[:2])
    with pytest.raises(ValueError, match=r"\[n_windows, ctx_len\]"):
        saekit.harvest(demo_model, ["blocks.1.mlp.hook_post"], demo_tokens[0])
