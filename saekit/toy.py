"""Toy settings with a known answer: ground-truth sparse data and toy models of superposition.

:func:`synthetic_sparse_data` draws activations ``x = codes @ features (+ noise)``
from a known dictionary of ``n_features`` unit-norm directions in ``d_in``
dimensions, with sparse non-negative codes. With ``n_features > d_in`` the features
are in superposition, and a dictionary learner can be scored by how well it
recovers them (:func:`mmcs`, :func:`recovery`, defined in :mod:`saekit.metrics`
and re-exported here).

The toy models of Elhage et al. (2022) live in :mod:`saekit.superposition` (the
ReLU-output model trained many at a time, its measures and the paper's experiments),
the ground-truth benchmark of every dictionary kind in :mod:`saekit.ground_truth`,
and the report that runs them all in :mod:`saekit.toy_report` (``saekit toy``); their
main names are re-exported here, so
``from saekit.toy import train_toy_models, run_toy`` works. This module keeps the
synthetic data.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from saekit.ground_truth import GroundTruthData, ground_truth_benchmark
from saekit.metrics import Recovery, mmcs, recovery
from saekit.superposition import (
    REGIMES,
    AntipodalPairs,
    Geometry,
    PhaseDiagram,
    Sensitivity,
    SparsitySweep,
    ToyModels,
    adversarial_sensitivity,
    antipodal_pairs,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    interference,
    pentagon,
    phase_diagram,
    sparsity_sweep,
    train_toy_models,
)
from saekit.toy_report import run_toy

__all__ = ["SyntheticData", "synthetic_sparse_data", "mmcs", "recovery", "Recovery",
           "ToyModels", "train_toy_models", "feature_norms", "interference", "dimensions_per_feature",
           "feature_dimensionality", "adversarial_sensitivity", "Sensitivity", "sparsity_sweep",
           "SparsitySweep", "phase_diagram", "PhaseDiagram", "REGIMES", "pentagon", "Geometry",
           "antipodal_pairs", "AntipodalPairs", "ground_truth_benchmark", "GroundTruthData", "run_toy"]

Magnitude = Literal["uniform", "exponential", "constant"]
FeatureProbs = Literal["uniform", "zipf"]
_MAGNITUDES = ("uniform", "exponential", "constant")
_FEATURE_PROBS = ("uniform", "zipf")
_DEFAULT_P_ACTIVE = 0.02


# ---------------------------------------------------------------------------
# Synthetic sparse data


class SyntheticData(NamedTuple):
    """Activations drawn from a known sparse dictionary."""

    x: Tensor
    """``[n, d_in]`` activations, ``codes @ features`` plus Gaussian noise."""
    codes: Tensor
    """``[n, n_features]`` true non-negative sparse codes."""
    features: Tensor
    """``[n_features, d_in]`` true unit-norm feature directions."""
    probs: Tensor
    """``[n_features]`` firing probability of each feature."""


def synthetic_sparse_data(
    n: int,
    d_in: int = 64,
    n_features: int = 256,
    *,
    p_active: float | None = None,
    feature_probs: FeatureProbs | Tensor = "uniform",
    zipf_exponent: float = 1.0,
    magnitude: Magnitude = "uniform",
    correlation: float = 0.0,
    group_size: int = 2,
    noise: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> SyntheticData:
    """Sparse non-negative combinations of random unit-norm directions.

    Directions are i.i.d. Gaussian vectors normalised to unit norm (so nearly
    orthogonal when ``d_in`` is large, never exactly). On each token, feature ``i``
    fires with probability ``probs[i]``; a firing feature gets a positive magnitude,
    a silent one a code of 0.

    Parameters
    ----------
    n
        Number of tokens (rows).
    d_in
        Activation dimension.
    n_features
        Number of true features; more than ``d_in`` puts them in superposition.
    p_active
        Mean firing probability over features (default 0.02), so the expected L0 is
        ``p_active * n_features``. Not allowed with a tensor ``feature_probs``.
    feature_probs
        ``"uniform"``: every feature fires with ``p_active``. ``"zipf"``: feature
        ``i`` fires with probability ∝ ``(i + 1) ** -zipf_exponent``, scaled so the
        mean is ``p_active``; probabilities that would exceed 1 are capped at 1 and
        the excess spread over the rest, keeping the mean. Features are then in
        decreasing order of frequency. A ``[n_features]`` tensor gives the
        probabilities directly.
    zipf_exponent
        Decay exponent for ``"zipf"``.
    magnitude
        Distribution of a firing feature's code: ``"uniform"`` on [0.5, 1.5] (mean 1,
        bounded away from 0 so every firing is visible), ``"exponential"`` with rate 1
        (mean 1, heavy right tail, many near-zero firings), or ``"constant"`` 1.
    correlation
        Probability, per token and per group, that the features of a group share
        one random draw. Features are grouped in consecutive blocks of
        ``group_size``. Feature ``i`` fires when a Uniform(0, 1) draw ``u`` is below
        ``probs[i]``; with probability ``correlation`` every member of the group uses
        the group's shared ``u``, otherwise each uses its own. Every feature's firing
        probability stays exactly ``probs[i]`` (each ``u`` is uniform either way),
        while members co-fire: for two members with probability ``p`` each,
        P(j fires | i fires) = ``correlation + (1 - correlation) * p``. Features in
        different groups stay independent. Magnitudes are independent.
    group_size
        Features per correlated group (the last group may be smaller).
    noise
        Standard deviation of i.i.d. Gaussian noise added to each entry of ``x``.
    seed
        Seeds every draw: the same arguments and seed give the same data on any
        device and in any dtype (drawn on the CPU in float64, then cast).
    device, dtype
        Where and in what dtype to return the tensors.

    Returns
    -------
    SyntheticData
        ``(x, codes, features, probs)``.
    """
    probs = _firing_probs(n, d_in, n_features, p_active, feature_probs, zipf_exponent)
    _check_draw_args(magnitude, correlation, group_size, noise, seed)
    g = torch.Generator().manual_seed(seed)
    features = _unit_directions(n_features, d_in, g)
    fires = _draw_firing(n, probs, correlation, group_size, g)
    codes = fires * _magnitudes(magnitude, (n, n_features), g)
    x = codes @ features
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    out = dict(device=device, dtype=dtype)
    return SyntheticData(x.to(**out), codes.to(**out), features.to(**out), probs.to(**out))


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _firing_probs(n: int, d_in: int, n_features: int, p_active: float | None,
                  feature_probs: FeatureProbs | Tensor, zipf_exponent: float) -> Tensor:
    """Validate the shape and frequency arguments; return float64 ``[n_features]`` probabilities."""
    for value, name in ((n, "n"), (d_in, "d_in"), (n_features, "n_features")):
        _check_positive_int(value, name)
    if isinstance(feature_probs, Tensor):
        return _explicit_probs(feature_probs, n_features, p_active)
    if p_active is None:
        p_active = _DEFAULT_P_ACTIVE
    if not 0.0 < p_active <= 1.0:  # also rejects nan
        raise ValueError(f"p_active must be in (0, 1], got {p_active}")
    if feature_probs == "uniform":
        return torch.full((n_features,), float(p_active), dtype=torch.float64)
    if feature_probs == "zipf":
        if not (math.isfinite(zipf_exponent) and zipf_exponent >= 0):
            raise ValueError(f"zipf_exponent must be finite and >= 0, got {zipf_exponent}")
        return _zipf_probs(n_features, p_active, zipf_exponent)
    raise ValueError(f"feature_probs must be one of {_FEATURE_PROBS} or a tensor, "
                     f"got {feature_probs!r}")


def _explicit_probs(probs: Tensor, n_features: int, p_active: float | None) -> Tensor:
    if p_active is not None:
        raise ValueError("give either p_active or a tensor of feature_probs, not both")
    if probs.shape != (n_features,):
        raise ValueError(f"feature_probs must have shape [n_features] = [{n_features}], "
                         f"got {tuple(probs.shape)}")
    probs = probs.detach().to("cpu", torch.float64)
    if not ((probs >= 0) & (probs <= 1)).all():  # also rejects nan
        raise ValueError("feature_probs must lie in [0, 1]")
    return probs


def _zipf_probs(n_features: int, mean: float, exponent: float) -> Tensor:
    """Probabilities ∝ rank^-exponent with the given mean, capped at 1 (water-filling).

    The first ``k`` (most frequent) features are capped at 1 and the rest scaled by
    ``(mean * n_features - k) / Σ_{i≥k} w_i``; ``k`` is the smallest count for which
    the largest uncapped probability is at most 1.
    """
    w = torch.arange(1, n_features + 1, dtype=torch.float64).pow(-exponent)
    target = mean * n_features
    tail = w.flip(0).cumsum(0).flip(0)  # tail[k] = Σ_{i ≥ k} w_i
    k = torch.arange(n_features, dtype=torch.float64)
    scale = (target - k) / tail
    # mean < 1 guarantees some k < target qualifies, so `first` exists and scale > 0.
    first = int((scale * w <= 1 + 1e-12).nonzero()[0]) if mean < 1 else n_features
    probs = torch.ones(n_features, dtype=torch.float64)
    if first < n_features:
        probs[first:] = (scale[first] * w[first:]).clamp(max=1.0)
    return probs


def _check_draw_args(magnitude: str, correlation: float, group_size: int, noise: float,
                     seed: int) -> None:
    if magnitude not in _MAGNITUDES:
        raise ValueError(f"magnitude must be one of {_MAGNITUDES}, got {magnitude!r}")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    _check_positive_int(group_size, "group_size")
    if correlation > 0 and group_size < 2:
        raise ValueError("correlation > 0 needs group_size >= 2 (features co-fire within a group)")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0, got {noise}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")


def _unit_directions(n_features: int, d_in: int, g: torch.Generator) -> Tensor:
    directions = torch.randn(n_features, d_in, generator=g, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def _draw_firing(n: int, probs: Tensor, correlation: float, group_size: int,
                 g: torch.Generator) -> Tensor:
    """Bool ``[n, n_features]``: feature i fires where its uniform draw is below probs[i]."""
    u = torch.rand(n, probs.numel(), generator=g, dtype=torch.float64)
    if correlation > 0:
        group = torch.arange(probs.numel()) // group_size
        n_groups = int(group[-1]) + 1
        shared_u = torch.rand(n, n_groups, generator=g, dtype=torch.float64)[:, group]
        share = torch.rand(n, n_groups, generator=g, dtype=torch.float64)[:, group] < correlation
        # Swapping one uniform draw for another keeps each feature's marginal exact.
        u = torch.where(share, shared_u, u)
    return u < probs


def _magnitudes(kind: str, shape: tuple[int, int], g: torch.Generator) -> Tensor:
    if kind == "uniform":
        return 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
    if kind == "exponential":
        return torch.empty(shape, dtype=torch.float64).exponential_(1.0, generator=g)
    return torch.ones(shape, dtype=torch.float64)
