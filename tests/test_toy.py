"""Synthetic sparse data: shapes, determinism, firing statistics, argument checks."""

import math

import pytest
import torch

from saekit.toy import SyntheticData, synthetic_sparse_data


def test_shapes_dtype_and_unit_norm_features():
    data = synthetic_sparse_data(500, d_in=16, n_features=48, dtype=torch.float64)
    assert isinstance(data, SyntheticData)
    assert data.x.shape == (500, 16)
    assert data.codes.shape == (500, 48)
    assert data.features.shape == (48, 16)
    assert data.probs.shape == (48,)
    assert all(t.dtype == torch.float64 for t in data)
    torch.testing.assert_close(data.features.norm(dim=1), torch.ones(48, dtype=torch.float64))
    assert (data.codes >= 0).all()


def test_x_is_codes_times_features_without_noise():
    data = synthetic_sparse_data(300, d_in=8, n_features=32, p_active=0.1, dtype=torch.float64)
    torch.testing.assert_close(data.x, data.codes @ data.features, rtol=0, atol=1e-12)


def test_noise_has_the_requested_std():
    clean = synthetic_sparse_data(2000, d_in=16, n_features=32, seed=4)
    noisy = synthetic_sparse_data(2000, d_in=16, n_features=32, seed=4, noise=0.3)
    torch.testing.assert_close(noisy.codes, clean.codes)
    assert (noisy.x - noisy.codes @ noisy.features).std().item() == pytest.approx(0.3, rel=0.03)


def test_deterministic_in_seed_and_independent_of_dtype():
    a = synthetic_sparse_data(200, d_in=8, n_features=24, seed=7, correlation=0.5, noise=0.1)
    b = synthetic_sparse_data(200, d_in=8, n_features=24, seed=7, correlation=0.5, noise=0.1)
    c = synthetic_sparse_data(200, d_in=8, n_features=24, seed=8, correlation=0.5, noise=0.1)
    d = synthetic_sparse_data(200, d_in=8, n_features=24, seed=7, correlation=0.5, noise=0.1,
                              dtype=torch.float64)
    for ta, tb in zip(a, b, strict=True):
        assert torch.equal(ta, tb)
    assert not torch.equal(a.features, c.features)
    assert not torch.equal(a.codes, c.codes)
    torch.testing.assert_close(d.x.float(), a.x)


def _rate_tolerance(p, n):
    return 5 * math.sqrt(p * (1 - p) / n)  # 5 standard errors of a binomial proportion


@pytest.mark.parametrize("magnitude", ["uniform", "exponential", "constant"])
def test_firing_rate_matches_p_active(magnitude):
    n, p = 20_000, 0.02
    data = synthetic_sparse_data(n, d_in=16, n_features=64, p_active=p, magnitude=magnitude)
    rates = (data.codes > 0).double().mean(0)
    # Per feature, and overall (64× more draws, so a tighter check).
    assert (rates - p).abs().max() < _rate_tolerance(p, n)
    assert abs(rates.mean().item() - p) < _rate_tolerance(p, 64 * n)


def test_magnitudes():
    kw = dict(n=5000, d_in=8, n_features=32, p_active=0.2)
    uni = synthetic_sparse_data(**kw, magnitude="uniform").codes
    uni = uni[uni > 0]
    assert uni.min() >= 0.5 and uni.max() <= 1.5
    expo = synthetic_sparse_data(**kw, magnitude="exponential").codes
    expo = expo[expo > 0]
    assert expo.mean().item() == pytest.approx(1.0, abs=0.05)
    assert expo.max() > 3  # the heavy tail uniform never has
    const = synthetic_sparse_data(**kw, magnitude="constant").codes
    assert set(const.unique().tolist()) == {0.0, 1.0}


def test_zipf_probabilities_decay_keep_the_mean_and_are_respected():
    n, p = 20_000, 0.05
    data = synthetic_sparse_data(n, d_in=16, n_features=128, p_active=p, feature_probs="zipf")
    probs = data.probs.double()
    assert probs.mean().item() == pytest.approx(p, rel=1e-6)
    assert (probs[1:] <= probs[:-1]).all() and probs.max() <= 1
    assert probs[0] == 1  # 0.05 * 128 / H_128 > 1: the head is capped
    rates = (data.codes > 0).double().mean(0)
    tol = 5 * torch.sqrt(probs * (1 - probs) / n) + 1e-12
    assert ((rates - probs).abs() <= tol).all()


def test_explicit_feature_probs():
    probs = torch.linspace(0, 0.5, 16)
    data = synthetic_sparse_data(4000, d_in=8, n_features=16, feature_probs=probs)
    torch.testing.assert_close(data.probs, probs)
    assert (data.codes[:, 0] == 0).all()


def _cofire(fires, i, j):
    """P(j fires | i fires)."""
    return (fires[:, i] & fires[:, j]).sum().item() / fires[:, i].sum().item()


def test_correlation_raises_cofiring_within_groups_only_and_keeps_marginals():
    n, p, c = 20_000, 0.05, 0.8
    kw = dict(n=n, d_in=16, n_features=64, p_active=p, group_size=2, seed=1)
    indep = synthetic_sparse_data(**kw).codes > 0
    corr = synthetic_sparse_data(**kw, correlation=c).codes > 0
    pairs = [(i, i + 1) for i in range(0, 64, 2)]          # same group
    across = [(i, i + 1) for i in range(1, 63, 2)]         # neighbours in different groups
    within = sum(_cofire(corr, i, j) for i, j in pairs) / len(pairs)
    assert within == pytest.approx(c + (1 - c) * p, abs=0.03)
    assert sum(_cofire(indep, i, j) for i, j in pairs) / len(pairs) == pytest.approx(p, abs=0.02)
    assert sum(_cofire(corr, i, j) for i, j in across) / len(across) == pytest.approx(p, abs=0.02)
    rates = corr.double().mean(0)
    assert (rates - p).abs().max() < _rate_tolerance(p, n)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0), "n must be a positive int"),
    (dict(n=10, d_in=0), "d_in"),
    (dict(n=10, n_features=2.5), "n_features"),
    (dict(n=10, p_active=0.0), "p_active"),
    (dict(n=10, p_active=1.5), "p_active"),
    (dict(n=10, p_active=float("nan")), "p_active"),
    (dict(n=10, feature_probs="powerlaw"), "feature_probs must be one of"),
    (dict(n=10, n_features=4, feature_probs=torch.ones(5)), r"shape \[n_features\]"),
    (dict(n=10, n_features=2, feature_probs=torch.tensor([0.1, 1.2])), r"\[0, 1\]"),
    (dict(n=10, n_features=2, feature_probs=torch.ones(2), p_active=0.1), "not both"),
    (dict(n=10, feature_probs="zipf", zipf_exponent=-1.0), "zipf_exponent"),
    (dict(n=10, magnitude="gaussian"), "magnitude"),
    (dict(n=10, correlation=1.1), "correlation"),
    (dict(n=10, correlation=0.5, group_size=1), "group_size >= 2"),
    (dict(n=10, noise=-0.1), "noise"),
    (dict(n=10, seed=1.5), "seed"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_sparse_data(**kwargs)
