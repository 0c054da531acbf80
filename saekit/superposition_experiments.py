"""The experiments of Elhage et al. (2022) on toy models of superposition, each one call
that trains a grid of models (:func:`saekit.superposition.train_toy_models`) and
summarises it with the measures of :mod:`saekit.superposition`: :func:`sparsity_sweep`
(more features represented, and in superposition, as sparsity rises),
:func:`phase_diagram` (two features in one dimension), :func:`pentagon` (five features
in two dimensions) and :func:`antipodal_pairs`. ``saekit.toy`` re-exports them and
``saekit toy`` reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from saekit.superposition import (
    REPRESENTED,
    SUPERPOSED,
    ToyModels,
    antipodal_partners,
    dimensions_per_feature,
    feature_angles,
    feature_dimensionality,
    feature_norms,
    interference,
    train_toy_models,
)

__all__ = [
    "SparsitySweep", "sparsity_sweep", "PhaseDiagram", "phase_diagram", "Geometry", "pentagon", "geometry_of",
    "AntipodalPairs", "antipodal_pairs", "summarise_sweep", "classify_two_features", "count_antipodal_pairs",
]


class SparsitySweep(NamedTuple):
    """One toy model per sparsity, with the paper's measures."""

    models: ToyModels
    """The trained models, one per sparsity."""
    sparsity: Tensor
    """``[n_models]`` sparsity S of each model."""
    n_represented: Tensor
    """``[n_models]`` features with ‖W_i‖ > 0.5."""
    n_superposed: Tensor
    """``[n_models]`` represented features with interference > 0.1 (sharing dimensions)."""
    mean_interference: Tensor
    """``[n_models]`` mean interference Σ_{j≠i} (Ŵ_i·W_j)² over the represented features."""
    dims_per_feature: Tensor
    """``[n_models]`` D* = m / ‖W‖_F²."""


def summarise_sweep(models: ToyModels) -> SparsitySweep:
    """The measures of :class:`SparsitySweep` for already-trained models."""
    rep = feature_norms(models.W) > REPRESENTED
    inter = interference(models.W)
    n_rep = rep.sum(-1)
    return SparsitySweep(models, models.sparsity, n_rep, (rep & (inter > SUPERPOSED)).sum(-1),
                         (inter * rep).sum(-1) / n_rep.clamp_min(1), dimensions_per_feature(models.W))


def sparsity_sweep(sparsities: Sequence[float] = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999),
                   n_features: int = 20, n_hidden: int = 5, importance: float | Tensor = 0.7,
                   **train: object) -> SparsitySweep:
    """The paper's introduction figure: ``n_features`` features of decaying importance in
    ``n_hidden`` dimensions at rising sparsity. Dense models keep the ``n_hidden`` most
    important features, orthogonally; sparse ones represent more features than
    dimensions, in superposition. ``train`` goes to :func:`train_toy_models`."""
    return summarise_sweep(train_toy_models(n_features, n_hidden, list(sparsities), importance, **train))


class PhaseDiagram(NamedTuple):
    """Two features in one dimension: which one gets it, or whether they share it."""

    relative_importance: Tensor
    """``[n_importance]`` importance of the extra feature (feature 2) relative to feature 1."""
    density: Tensor
    """``[n_density]`` feature probability 1 − S (both features)."""
    regime: Tensor
    """``[n_density, n_importance]`` index into :data:`REGIMES`: 0 the extra feature is
    not represented, 1 it gets the dimension to itself (feature 1 is dropped),
    2 both are represented antipodally (superposition), 3 anything else."""
    norms: Tensor
    """``[n_density, n_importance, 2]`` ‖W_1‖, ‖W_2‖."""
    cosine: Tensor
    """``[n_density, n_importance]`` cosine of W_1 and W_2 (±1 in one dimension, 0 if one is 0)."""
    models: ToyModels
    """The trained models, density-major."""


def classify_two_features(W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(regime, norms, cosine)`` for models ``W [..., n_hidden, 2]`` (see :class:`PhaseDiagram`)."""
    norms = feature_norms(W)
    rep = norms > REPRESENTED
    unit = W / norms.clamp_min(1e-12)[..., None, :]
    cos = (unit[..., 0] * unit[..., 1]).sum(-1)
    regime = torch.full(cos.shape, 3, dtype=torch.long)
    regime[~rep[..., 1]] = 0
    regime[rep[..., 1] & ~rep[..., 0]] = 1
    regime[rep[..., 0] & rep[..., 1] & (cos < -0.5)] = 2
    return regime, norms, cos


def phase_diagram(relative_importance: Sequence[float] | Tensor | None = None,
                  density: Sequence[float] | Tensor | None = None, *, n_instances: int = 3,
                  **train: object) -> PhaseDiagram:
    """Train n = 2, m = 1 models over a grid of the extra feature's relative importance
    (default 9 values, log-spaced 0.1 – 10) and the feature density 1 − S (default 9
    values, log-spaced 0.01 – 1), and classify each (:func:`classify_two_features`).

    Expected, as in the paper's figure: dense features give the dimension to the more
    important one (not represented below a ratio of 1, dedicated above); sparse ones,
    near a ratio of 1, share it antipodally (W_1 ≈ −W_2)."""
    r = torch.as_tensor(torch.logspace(-1, 1, 9) if relative_importance is None else relative_importance,
                        dtype=torch.float32).reshape(-1)
    p = torch.as_tensor(torch.logspace(-2, 0, 9) if density is None else density,
                        dtype=torch.float32).reshape(-1)
    if not (torch.isfinite(r) & (r > 0)).all():
        raise ValueError(f"relative_importance must be finite and > 0, got {r.tolist()}")
    if not ((p > 0) & (p <= 1)).all():
        raise ValueError(f"density (1 - S) must lie in (0, 1], got {p.tolist()}")
    imp = torch.stack([torch.ones(len(p), len(r)), r.expand(len(p), -1)], -1).reshape(-1, 2)
    models = train_toy_models(2, 1, (1 - p).repeat_interleave(len(r)), imp, n_instances=n_instances, **train)
    regime, norms, cos = classify_two_features(models.W)
    shape = (len(p), len(r))
    return PhaseDiagram(r, p, regime.reshape(shape), norms.reshape(*shape, 2), cos.reshape(shape), models)


class Geometry(NamedTuple):
    """Feature directions of one model with two hidden dimensions."""

    W: Tensor
    """``[2, n_features]`` the model's feature directions."""
    norms: Tensor
    """``[n_features]`` ‖W_i‖."""
    angles: Tensor
    """``[n_features]`` direction of each feature, in degrees, sorted increasingly."""
    gaps: Tensor
    """``[n_features]`` angle between consecutive sorted directions (wrapping round);
    all 360/n for a regular polygon."""
    dimensionality: Tensor
    """``[n_features]`` D_i of each feature (2/5 each in a regular pentagon)."""
    model: ToyModels
    """The model (a batch of one)."""


def pentagon(sparsity: float = 0.97, n_features: int = 5, *, n_instances: int = 4,
             **train: object) -> Geometry:
    """n features of equal importance in two dimensions at high sparsity: with n = 5
    they form a regular pentagon (norms about 1, directions 72° apart)."""
    return geometry_of(train_toy_models(n_features, 2, [sparsity], 1.0, n_instances=n_instances, **train))


def geometry_of(model: ToyModels) -> Geometry:
    """The :class:`Geometry` of a model with two hidden dimensions (a batch of one)."""
    if model.W.shape[0] != 1:
        raise ValueError(f"geometry_of takes one model (ToyModels.model(k)), got {model.W.shape[0]}")
    W = model.W[0]
    angles = feature_angles(W).sort().values
    gaps = torch.diff(angles, append=angles[:1] + 360)
    return Geometry(W, feature_norms(W), angles, gaps, feature_dimensionality(W), model)


class AntipodalPairs(NamedTuple):
    """Models with n = 2m features of equal importance: do they pair up as W_i ≈ −W_j?"""

    models: ToyModels
    """One model per sparsity."""
    sparsity: Tensor
    """``[n_models]``."""
    n_represented: Tensor
    """``[n_models]`` features with ‖W_i‖ > 0.5."""
    n_pairs: Tensor
    """``[n_models]`` mutual antipodal pairs: represented features each other's most
    opposite partner at cosine < −0.9."""
    partner_cosine: Tensor
    """``[n_models, n_features]`` cosine of each feature with its most opposite partner."""
    dimensionality: Tensor
    """``[n_models, n_features]`` D_i (1/2 for a feature in an antipodal pair)."""


def count_antipodal_pairs(W: Tensor, threshold: float = -0.9) -> Tensor:
    """``[...]`` mutual pairs of represented features, each the other's most opposite
    partner, at cosine below ``threshold``."""
    partner, cos = antipodal_partners(W)
    rep = feature_norms(W) > REPRESENTED
    mutual = partner.gather(-1, partner) == torch.arange(W.shape[-1])
    partner_rep = rep.gather(-1, partner)
    return (mutual & rep & partner_rep & (cos < threshold)).sum(-1) // 2


def antipodal_pairs(n_hidden: int = 3, sparsities: Sequence[float] = (0.0, 0.5, 0.8, 0.9, 0.95),
                    *, n_instances: int = 2, **train: object) -> AntipodalPairs:
    """n = 2m features of equal importance over a range of sparsity. Dense: no pairs (with
    equal importances any m-dimensional projection is optimal, so the norms may spread
    over more than m features); sparser: every feature represented, in m antipodal pairs
    on orthogonal axes (D_i = 1/2)."""
    models = train_toy_models(2 * n_hidden, n_hidden, list(sparsities), 1.0, n_instances=n_instances, **train)
    _, cos = antipodal_partners(models.W)
    return AntipodalPairs(models, models.sparsity, (feature_norms(models.W) > REPRESENTED).sum(-1),
                          count_antipodal_pairs(models.W), cos, feature_dimensionality(models.W))
