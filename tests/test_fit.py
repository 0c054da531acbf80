"""saekit.fit on tensors: ground-truth recovery for every SAE kind, and its invariants."""

import pytest
import torch

import saekit
from saekit.metrics import fvu, recovery
from saekit.toy import synthetic_sparse_data
from saekit.training.schedule import MAX_EPOCHS, MIN_STEPS, default_schedule


@pytest.fixture(scope="module")
def toy():
    return synthetic_sparse_data(50_000, seed=0)  # 256 features in 64 dims, ~5 active per token


def test_topk_recovers_the_true_features_on_the_default_setting(toy):
    sae = saekit.fit(toy.x, "topk", d_dict=256, k=5, batch_size=512, epochs=10)
    r = recovery(sae.W_dec, toy.features)
    assert r.mmcs >= 0.9, r  # measured 0.944


@pytest.mark.parametrize("kind,options", [
    ("batchtopk", {"k": 5}),            # measured MMCS 0.918, L0 4.7
    ("relu", {"l1_coefficient": 1.0}),   # measured 0.984, L0 14
    ("jumprelu", {"l0_coefficient": 1.0}),  # measured 0.935, L0 5.9
])
def test_every_kind_recovers_features(toy, kind, options):
    sae = saekit.fit(toy.x, kind, d_dict=256, batch_size=512, epochs=10, lr=4e-3, **options)
    r = recovery(sae.W_dec, toy.features)
    assert r.mmcs >= 0.85, r
    with torch.no_grad():
        codes = sae.encode(toy.x[:4000])
        assert fvu(toy.x[:4000], sae.decode(codes)) < 0.35
        assert sae.active(codes).sum(1).float().mean() < 20


def test_default_schedule_repeats_small_data_and_keeps_large_data_to_one_pass():
    assert default_schedule(150_000) == (1024, 9)  # the SmolLM2 setting: 8 epochs at 1024 by hand
    assert default_schedule(1_000_000) == (4096, 5)
    assert default_schedule(10_000_000) == (4096, 1)
    assert default_schedule(2_000) == (256, MAX_EPOCHS)
    assert default_schedule(150_000, batch_size=4096) == (4096, 33 if MAX_EPOCHS > 33 else MAX_EPOCHS)
    for n in (3_000, 50_000, 400_000, 2_000_000):
        b, e = default_schedule(n)
        assert e == MAX_EPOCHS or e * n // b >= MIN_STEPS


def test_fit_invariants(toy, tmp_path):
    x = toy.x[:8192] * 7.0  # raw activations far from unit scale
    a = saekit.fit(x, "topk", d_dict=64, k=4, batch_size=256, seed=3, hook="blocks.0.hook_resid_post",
                   model="toy", out=tmp_path / "sae")
    b = saekit.fit(x, "topk", d_dict=64, k=4, batch_size=256, seed=3)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.b_enc, b.b_enc)  # seeded
    torch.testing.assert_close(a.W_dec.norm(dim=1), torch.ones(64))
    # Small data repeats until the run has MIN_STEPS steps (at most MAX_EPOCHS epochs).
    assert a.cfg.input_norm == "scalar" and a.cfg.metadata["steps"] == MAX_EPOCHS * 8192 // 256
    # The input scale is folded in: the saved dictionary takes raw activations (an
    # unfolded scale of 7 would put the FVU far above 1).
    with torch.no_grad():
        assert fvu(x, a(x)) < 0.9
    loaded = saekit.load_dictionary(tmp_path / "sae")
    torch.testing.assert_close(loaded(x), a(x))
    assert loaded.cfg.hook == "blocks.0.hook_resid_post" and loaded.log_firing_freq.shape == (64,)


def test_fit_records_the_model(demo_model, demo_acts):
    x = demo_acts["blocks.1.mlp.hook_post"]
    sae = saekit.fit(x, "topk", d_dict=128, k=8, batch_size=256, hook="blocks.1.mlp.hook_post", model=demo_model)
    assert sae.cfg.processing == "native" and sae.cfg.model.endswith("demo-lm")
    with torch.no_grad():
        assert fvu(x, sae(x)) < 0.9


def test_fit_from_an_activation_cache_equals_fit_from_the_tensor(toy, tmp_path):
    from saekit.activations import CacheWriter

    x = toy.x[:6000]
    with CacheWriter(tmp_path / "cache", {"blocks.0.hook_resid_post": 64}, model="toy", processing="raw",
                     data="synthetic", shard_tokens=1000) as w:
        for part in x.split(700):
            w.add({"blocks.0.hook_resid_post": part})
        w.close()
    a = saekit.fit(x, "topk", d_dict=64, k=4, batch_size=512, epochs=2, seed=1)
    b = saekit.fit(str(tmp_path / "cache"), "topk", d_dict=64, k=4, batch_size=512, epochs=2, seed=1)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, b.W_enc)


@pytest.mark.parametrize("kind,options", [("topk", {"k": 5}), ("relu", {"l1_coefficient": 1.0})])
def test_bf16_autocast_trains_to_about_the_same_place(toy, kind, options):
    kw = dict(d_dict=256, batch_size=512, epochs=3, lr=4e-3, **options)
    fp32 = saekit.fit(toy.x, kind, **kw)
    bf16 = saekit.fit(toy.x, kind, autocast=True, **kw)
    assert bf16.W_dec.dtype == torch.float32
    a, b = recovery(fp32.W_dec, toy.features).mmcs, recovery(bf16.W_dec, toy.features).mmcs
    assert b > a - 0.05, (a, b)


def test_torch_compile_trains_like_eager(toy):
    kw = dict(d_dict=64, k=4, batch_size=256, n_tokens=256 * 8, seed=0)
    eager = saekit.fit(toy.x[:4096], "topk", **kw)
    compiled = saekit.fit(toy.x[:4096], "topk", compile=True, **kw)
    rel = ((compiled.W_dec - eager.W_dec).norm() / eager.W_dec.norm()).item()
    assert rel < 1e-3, rel


@pytest.mark.timeout(120)
def test_fit_checks_the_hook_and_width_at_the_door(demo_model, demo_acts):
    x = demo_acts["blocks.1.mlp.hook_post"]
    with pytest.raises(ValueError, match=r"unknown hook 'blocks\.9\.mlp\.hook_post'.*Valid hooks"):
        saekit.fit(x, "topk", d_dict=64, k=4, hook="blocks.9.mlp.hook_post", model=demo_model)
    with pytest.raises(ValueError, match=r"hook 'blocks\.1\.hook_resid_post'.*width \d+.*d_in=%d" % x.shape[1]):
        saekit.fit(x, "topk", d_dict=64, k=4, hook="blocks.1.hook_resid_post", model=demo_model)
    with pytest.raises(ValueError, match=r"width"):
        saekit.fit(x, "snmf", d_dict=16, hook="blocks.1.hook_resid_post", model=demo_model)


def test_an_unknown_keyword_lists_every_valid_keyword():
    x = torch.randn(64, 8)
    with pytest.raises(ValueError) as e:
        saekit.fit(x, "topk", d_dict=16, k=2, learning_rate=1e-3)
    msg = str(e.value)
    assert "['learning_rate']" in msg
    for valid in ("lr", "n_tokens", "epochs", "warmup_steps", "batch_size", "seed", "dead_tokens",  # trainer
                  "aux_k", "aux_coefficient"):                                                    # the kind
        assert valid in msg, (valid, msg)
    with pytest.raises(ValueError, match=r"\['wta'\].*max_iter.*wta_fraction"):
        saekit.fit(x, "snmf", d_dict=4, wta=0.1)

