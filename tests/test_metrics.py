"""Metric functions: hand-computed examples, identities, recovery, streaming == one-shot."""

import math

import pytest
import torch

from saekit.metrics import (
    StreamingStats,
    cosine_similarity,
    dead_dense,
    density_histogram,
    explained_variance,
    firing_frequency,
    fvu,
    l0,
    l2_ratio,
    mmcs,
    reconstruction,
    recovery,
    relative_reconstruction_bias,
)
from saekit.toy import synthetic_sparse_data

# Two tokens in 2-D, worked by hand:
#   mean(x) = (1, 1), Σ‖x − mean‖² = 4, Σ‖x − x̂‖² = 1 + 1 = 2        → FVU 0.5
#   ‖x̂‖/‖x‖ = √2/2 and 2/2                                              → l2_ratio (√2/2 + 1)/2
#   Σ‖x̂‖² = 2 + 4 = 6, Σ x·x̂ = 2 + 4 = 6                               → RRB 1
#   cos = 2/(2·√2) and 1                                                 → (1/√2 + 1)/2
X = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
X_HAT = torch.tensor([[1.0, 1.0], [0.0, 2.0]])


def test_hand_computed_reconstruction_metrics():
    assert fvu(X, X_HAT) == pytest.approx(0.5)
    assert explained_variance(X, X_HAT) == pytest.approx(0.5)
    assert l2_ratio(X, X_HAT) == pytest.approx((math.sqrt(2) / 2 + 1) / 2)
    assert relative_reconstruction_bias(X, X_HAT) == pytest.approx(1.0)
    assert cosine_similarity(X, X_HAT) == pytest.approx((1 / math.sqrt(2) + 1) / 2)


def test_shrinkage_shows_in_l2_ratio_and_rrb_but_not_cosine():
    x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    assert l2_ratio(x, 0.8 * x) == pytest.approx(0.8)
    assert relative_reconstruction_bias(x, 0.8 * x) == pytest.approx(0.8)
    assert cosine_similarity(x, 0.8 * x) == pytest.approx(1.0)


def test_fvu_identities():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(1)) + 3.0
    assert fvu(x, x) == 0.0
    assert explained_variance(x, x) == 1.0
    assert fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, abs=1e-12)
    assert explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-12)


def test_leading_dimensions_are_tokens_and_half_precision_works():
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(2))
    x_hat = x + 0.1 * torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(3))
    assert fvu(x, x_hat) == pytest.approx(fvu(x.reshape(20, 6), x_hat.reshape(20, 6)))
    assert fvu(x.bfloat16(), x_hat.bfloat16()) == pytest.approx(fvu(x, x_hat), rel=0.05)


def test_zero_vectors_have_cosine_zero():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x_hat = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert cosine_similarity(x, x_hat) == pytest.approx(0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        fvu(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="float"):
        fvu(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokens"):
        fvu(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(TypeError, match="bool"):
        l0(torch.ones(3, 4))
    with pytest.raises(ValueError, match="dead_below"):
        dead_dense(torch.zeros(4), dead_below=0.5, dense_above=0.1)


def test_sparsity_metrics():
    active = torch.tensor([[True, False, True, False],
                           [False, False, True, False],
                           [True, False, True, False]])
    assert l0(active) == pytest.approx(5 / 3)
    freq = firing_frequency(active)
    assert freq.dtype == torch.float64
    torch.testing.assert_close(freq, torch.tensor([2 / 3, 0.0, 1.0, 0.0], dtype=torch.float64))
    dd = dead_dense(freq, dense_above=0.8)
    assert dd.dead.tolist() == [False, True, False, True]
    assert dd.dense.tolist() == [False, False, True, False]
    assert (dd.frac_dead, dd.frac_dense) == (0.5, 0.25)


def test_density_histogram_counts_every_feature_and_puts_dead_ones_at_log_eps():
    freq = torch.tensor([0.0, 0.0, 1e-3, 1e-2, 1e-2, 0.5])
    counts, edges = density_histogram(freq, bins=9)
    assert counts.sum() == 6 and counts.dtype == torch.int64
    assert edges.shape == (10,)
    assert edges[0].item() == pytest.approx(-10.0) and counts[0] == 2
    counts, edges = density_histogram(freq, bins=torch.tensor([-11.0, -5.0, -1.5, 0.0]))
    assert counts.tolist() == [2, 3, 1]


def test_mmcs_of_the_truth_is_one():
    feats = synthetic_sparse_data(1, d_in=32, n_features=96).features
    assert mmcs(feats, feats) == pytest.approx(1.0, abs=1e-6)
    assert mmcs(3.0 * feats, -feats) == pytest.approx(1.0, abs=1e-6)  # scale and sign ignored


def test_mmcs_of_a_random_basis_is_low():
    true = synthetic_sparse_data(1, d_in=512, n_features=64, seed=0).features
    random = torch.randn(64, 512, generator=torch.Generator().manual_seed(9))
    assert mmcs(random, true) < 0.3


def test_recovery_of_permuted_sign_flipped_noisy_copy():
    g = torch.Generator().manual_seed(5)
    true = synthetic_sparse_data(1, d_in=64, n_features=128, seed=5).features
    perm = torch.randperm(128, generator=g)
    signs = torch.where(torch.rand(128, generator=g) < 0.5, -1.0, 1.0)
    learned = true[perm] * signs[:, None] + 0.01 * torch.randn(128, 64, generator=g)
    learned = torch.cat([learned, torch.randn(32, 64, generator=g)])  # extra, unmatched rows
    rec = recovery(learned, true, threshold=0.9)
    assert rec.mmcs == pytest.approx(1.0, abs=0.01)
    assert rec.frac_recovered == 1.0
    assert rec.matched.dtype == torch.int64
    assert torch.equal(perm[rec.matched], torch.arange(128))  # each true row finds its copy
    assert rec.max_cos.shape == (128,)
    assert rec.mmcs == pytest.approx(mmcs(learned, true))


def test_recovery_threshold_and_chunking(monkeypatch):
    true = torch.eye(4)
    learned = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    monkeypatch.setattr(reconstruction, "_MATCH_CHUNK", 3)  # exercise the chunked path
    rec = recovery(learned, true, threshold=0.7)
    torch.testing.assert_close(rec.max_cos, torch.tensor([1.0, 2 ** -0.5, 2 ** -0.5, 0.0]))
    assert rec.frac_recovered == 0.75
    assert rec.matched.tolist()[:3] == [0, 1, 1]
    with pytest.raises(ValueError, match="different spaces"):
        recovery(learned, torch.eye(3))
    with pytest.raises(ValueError, match="threshold"):
        recovery(learned, true, threshold=1.5)


def _stream_data(n=600, d=12, d_dict=40):
    g = torch.Generator().manual_seed(11)
    # A large offset, as residual streams have, to stress the variance bookkeeping.
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2 + 50.0
    x_hat = x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) - 0.1
    active = torch.rand(n, d_dict, generator=g) < 0.1
    return x, x_hat, active


def test_streaming_equals_one_shot():
    x, x_hat, active = _stream_data()
    sizes = [100, 1, 250, 49, 200]  # five uneven batches
    stats = StreamingStats()
    for xb, hb, ab in zip(x.split(sizes), x_hat.split(sizes), active.split(sizes), strict=True):
        stats.update(xb, hb, ab)
    assert stats.n_tokens == 600
    tol = dict(rel=1e-10, abs=0)
    assert stats.fvu() == pytest.approx(fvu(x, x_hat), **tol)
    assert stats.explained_variance() == pytest.approx(explained_variance(x, x_hat), **tol)
    assert stats.l2_ratio() == pytest.approx(l2_ratio(x, x_hat), **tol)
    assert stats.relative_reconstruction_bias() == pytest.approx(
        relative_reconstruction_bias(x, x_hat), **tol)
    assert stats.cosine_similarity() == pytest.approx(cosine_similarity(x, x_hat), **tol)
    assert stats.l0() == pytest.approx(l0(active), **tol)
    torch.testing.assert_close(stats.firing_frequency(), firing_frequency(active),
                               rtol=1e-10, atol=0)
    assert stats.dead_dense(dense_above=0.12).frac_dense == dead_dense(
        firing_frequency(active), dense_above=0.12).frac_dense
    summary = stats.summary()
    assert summary["fvu"] == stats.fvu() and summary["l0"] == stats.l0()


def test_streaming_float32_batches_match_float64_one_shot():
    x, x_hat, _ = _stream_data()
    stats = StreamingStats()
    for xb, hb in zip(x.float().split(120), x_hat.float().split(120), strict=True):
        stats.update(xb, hb)
    # Only the float32 rounding of the inputs remains; the accumulation is float64.
    assert stats.fvu() == pytest.approx(fvu(x.float(), x_hat.float()), rel=1e-10)
    assert stats.fvu() == pytest.approx(fvu(x, x_hat), rel=1e-4)


def test_streaming_merge_and_errors():
    x, x_hat, active = _stream_data()
    a = StreamingStats().update(x[:300], x_hat[:300], active[:300])
    b = StreamingStats().update(x[300:], x_hat[300:], active[300:])
    merged = a.merge(b).merge(StreamingStats()).update(x[:0], x_hat[:0])  # empty ones are no-ops
    assert merged.fvu() == pytest.approx(fvu(x, x_hat), rel=1e-10)
    with pytest.raises(ValueError, match="no tokens"):
        StreamingStats().fvu()
    with pytest.raises(ValueError, match="pass active="):
        StreamingStats().update(x, x_hat).l0()
    with pytest.raises(ValueError, match="width"):
        StreamingStats().update(x, x_hat).update(x[:, :3], x_hat[:, :3])
    with pytest.raises(ValueError, match="tokens"):
        StreamingStats().update(x, x_hat, active[:10])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU (run by hand with -m gpu)")
def test_metrics_on_cuda_match_cpu():
    x, x_hat, active = _stream_data()
    xc, hc, ac = x.float().cuda(), x_hat.float().cuda(), active.cuda()
    assert fvu(xc, hc) == pytest.approx(fvu(x.float(), x_hat.float()), rel=1e-9)
    ref_cos = cosine_similarity(x.float(), x_hat.float())
    assert cosine_similarity(xc, hc) == pytest.approx(ref_cos, rel=1e-9)
    assert firing_frequency(ac).device.type == "cuda"
    stats = StreamingStats()
    for xb, hb, ab in zip(xc.split(100), hc.split(100), ac.split(100), strict=True):
        stats.update(xb, hb, ab)
    assert stats.fvu() == pytest.approx(fvu(x.float(), x_hat.float()), rel=1e-9)
    assert stats.l0() == pytest.approx(l0(active))
    counts, _ = density_histogram(stats.firing_frequency())
    assert counts.sum() == active.shape[1]
    feats = synthetic_sparse_data(1, d_in=32, n_features=96, device="cuda").features
    assert feats.device.type == "cuda"
    assert recovery(feats, feats.cpu()).frac_recovered == 1.0
