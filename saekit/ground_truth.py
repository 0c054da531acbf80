"""Ground truth for dictionary learning: fit every dictionary kind on data whose features are known.

Two sources of known features: the hidden activations ``h = W x`` of a trained toy
model of superposition (:mod:`saekit.superposition`; the true features are the
columns ``W_i`` of its represented features, directions in the m-dimensional hidden
space) and :func:`synthetic_sparse_data` (defined here; also exported by :mod:`saekit.toy`). :func:`ground_truth_benchmark`
scores each fitted dictionary by MMCS, the fraction of true features matched at
|cos| ≥ 0.9, dead latents, L0 and FVU. ``saekit toy`` (:mod:`saekit.toy_report`)
runs it on both. Transcoders and absorption have their own ground truths, built on the
helpers here: :mod:`saekit.ground_truth_transcoder` (a known sparse map x → y) and
:mod:`saekit.ground_truth_hierarchy` (parents and children, as in the Matryoshka toys).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.metrics import fvu, recovery, unit_rows
from saekit.superposition import REPRESENTED, ToyModels, feature_norms, sample_toy_inputs
from saekit.training.api import fit

#: Dictionary kinds of the ground-truth benchmark.
KINDS = ("relu", "topk", "batchtopk", "jumprelu", "snmf")
#: |cosine| at or above which a true feature counts as recovered.
MATCH = 0.9


Magnitude = Literal["uniform", "exponential", "constant"]
FeatureProbs = Literal["uniform", "zipf"]
MAGNITUDES = ("uniform", "exponential", "constant")
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
    features = unit_directions(n_features, d_in, g)
    fires = _draw_firing(n, probs, correlation, group_size, g)
    codes = fires * draw_magnitudes(magnitude, (n, n_features), g)
    x = codes @ features
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    out = dict(device=device, dtype=dtype)
    return SyntheticData(x.to(**out), codes.to(**out), features.to(**out), probs.to(**out))


def check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _firing_probs(n: int, d_in: int, n_features: int, p_active: float | None,
                  feature_probs: FeatureProbs | Tensor, zipf_exponent: float) -> Tensor:
    """Validate the shape and frequency arguments; return float64 ``[n_features]`` probabilities."""
    for value, name in ((n, "n"), (d_in, "d_in"), (n_features, "n_features")):
        check_positive_int(value, name)
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
    if magnitude not in MAGNITUDES:
        raise ValueError(f"magnitude must be one of {MAGNITUDES}, got {magnitude!r}")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    check_positive_int(group_size, "group_size")
    if correlation > 0 and group_size < 2:
        raise ValueError("correlation > 0 needs group_size >= 2 (features co-fire within a group)")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0, got {noise}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")


def unit_directions(n_features: int, d_in: int, g: torch.Generator) -> Tensor:
    directions = torch.randn(n_features, d_in, generator=g, dtype=torch.float64)
    return unit_rows(directions)


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


def draw_magnitudes(kind: str, shape: tuple[int, int], g: torch.Generator) -> Tensor:
    if kind == "uniform":
        return 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
    if kind == "exponential":
        return torch.empty(shape, dtype=torch.float64).exponential_(1.0, generator=g)
    return torch.ones(shape, dtype=torch.float64)


# --------------------------------------------------------------------------- ground-truth benchmark


class GroundTruthData(NamedTuple):
    """Activations with known feature directions, split for fitting and evaluation."""

    name: str
    """Label of the data set in the tables."""
    train: Tensor
    """``[n_train, d_in]`` activations the dictionaries are fitted on."""
    test: Tensor
    """``[n_test, d_in]`` held-out activations of the same distribution."""
    features: Tensor
    """``[n_true, d_in]`` the true feature directions (rows)."""
    expected_l0: float
    """Mean number of features present per row: the k given to top-k dictionaries."""
    d_dict: int
    """Dictionary width to fit (the number of features the data was made from)."""


def toy_hidden_data(models: ToyModels, k: int = 0, n_train: int = 32_768, n_test: int = 8192,
                    seed: int = 0) -> GroundTruthData:
    """The hidden activations ``h = W x`` of toy model ``k`` on its own inputs.

    True features are the columns ``W_i`` of the represented features (‖W_i‖ > 0.5),
    as rows; the dictionary width is the model's ``n_features``.
    """
    W, S = models.W[k], models.sparsity[k:k + 1]
    n_features = W.shape[1]
    g = torch.Generator().manual_seed(seed)
    x = sample_toy_inputs(S, n_features, n_train + n_test, g)[0]
    h = x @ W.T
    rep = feature_norms(W) > REPRESENTED
    return GroundTruthData(f"toy hidden (n={n_features}, m={W.shape[0]}, 1-S={1 - float(S):.3g})",
                           h[:n_train], h[n_train:], W.T[rep].clone(), n_features * (1 - float(S)), n_features)


def synthetic_data(d_in: int = 32, n_features: int = 96, p_active: float = 0.04, n_train: int = 32_768,
                   n_test: int = 8192, seed: int = 0) -> GroundTruthData:
    """:func:`synthetic_sparse_data` (uniform magnitudes on [0.5, 1.5]) split
    into fit and held-out rows."""
    data = synthetic_sparse_data(n_train + n_test, d_in, n_features, p_active=p_active, seed=seed)
    return GroundTruthData(f"synthetic (n={n_features}, d={d_in}, p={p_active:g})", data.x[:n_train],
                           data.x[n_train:], data.features, n_features * p_active, n_features)


def dictionary_settings(kind: str, data: GroundTruthData,
                        d_dict: int | None = None) -> tuple[int, int | None, dict[str, Any]]:
    """``(d_dict, k, options)`` the benchmark fits ``kind`` with on ``data``.

    SAEs get ``d_dict`` = the number of true features (unless ``d_dict`` is given). ``topk``/``batchtopk`` keep k =
    round(expected L0) (at least 1); ``relu`` uses ``l1_coefficient`` 1 and ``jumprelu``
    ``l0_coefficient`` 1 (the values ``tests/test_fit.py`` measured on synthetic data).
    ``snmf`` is limited to ``d_dict`` ≤ d_in (``fit_snmf`` refuses more than the data's
    rank) and uses ``wta_fraction`` 1.0, plain semi-NMF: the true directions are dense
    over the few hidden dimensions (a toy model's ``W_i`` spreads over all m of them),
    so a winner-take-all support of a fraction of the dimensions could not express
    them; its codes keep the top-k per row.
    """
    k = max(1, round(data.expected_l0))
    d_in = data.train.shape[1]
    if kind == "snmf":
        d = min(d_in, data.d_dict if d_dict is None else d_dict)
        return d, min(k, d), {"wta_fraction": 1.0}
    d = data.d_dict if d_dict is None else d_dict
    if kind in ("topk", "batchtopk"):
        return d, min(k, d), {}
    if kind == "relu":
        return d, None, {"l1_coefficient": 1.0}
    if kind == "jumprelu":
        return d, None, {"l0_coefficient": 1.0}
    raise ValueError(f"unknown kind {kind!r}; the benchmark fits {KINDS}")


def _signed_mmcs(learned: Tensor, true: Tensor) -> float:
    """Mean over true features of the best *signed* cosine: a non-negative code can only
    add a direction, so ``−W_i`` does not reconstruct ``W_i`` (antipodal toy features)."""
    lu, tu = unit_rows(learned.double()), unit_rows(true.double())
    return float((tu @ lu.T).max(1).values.mean())


def ground_truth_benchmark(datasets: Sequence[GroundTruthData], kinds: Sequence[str] = KINDS, *,
                           epochs: int = 10, batch_size: int = 512, lr: float = 4e-3, seed: int = 0,
                           width_control: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """Fit each dictionary kind on each data set and score it against the true features.

    SAEs train ``epochs`` passes at ``lr`` with batches of ``batch_size`` (scalar input
    normalisation, saekit's defaults otherwise); SNMF fits by its own alternating passes.
    Settings per kind: :func:`dictionary_settings`. With ``width_control``, where SNMF
    is capped below the number of true features (d_dict ≤ d_in), a ``topk`` SAE of
    SNMF's width is fitted too, so the cap and the method can be told apart.

    Returns
    -------
    One row per (data, kind): ``MMCS`` (mean over true features of the best |cosine|,
    :func:`saekit.metrics.recovery`), ``signed MMCS`` (the best signed cosine),
    ``matched >= 0.9`` (fraction of true features with a learned direction at |cos| ≥
    0.9), ``dead`` (fraction of dictionary features never active on the held-out rows,
    by the dictionary's own ``active``), ``L0`` and ``FVU`` on the held-out rows, and the
    fit time.
    """
    jobs: list[tuple[GroundTruthData, str, int | None]] = []
    for data in datasets:
        for kind in kinds:
            jobs.append((data, kind, None))
            width = dictionary_settings(kind, data)[0]
            if kind == "snmf" and width_control and width < data.d_dict:
                jobs.append((data, "topk", width))
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), desc="ground truth", unit="fit")
    rows = []
    for data, kind, width in jobs:
        d_dict, k, options = dictionary_settings(kind, data, width)
        kw = {} if kind == "snmf" else dict(batch_size=batch_size, epochs=epochs, lr=lr)
        t0 = time.time()
        dictionary = fit(data.train, kind, d_dict=d_dict, k=k, seed=seed, **kw, **options)
        seconds = time.time() - t0
        with torch.no_grad():
            codes = dictionary.encode(data.test)
            active = dictionary.active(codes)
            x_hat = dictionary.decode(codes)
        rec = recovery(dictionary.W_dec, data.features, threshold=MATCH)
        settings = ", ".join([f"k={k}"] * (k is not None) + [f"{key}={v}" for key, v in options.items()])
        rows.append({"data": data.name, "kind": kind, "d_dict": d_dict, "settings": settings,
                     "true features": len(data.features), "MMCS": rec.mmcs,
                     "signed MMCS": _signed_mmcs(dictionary.W_dec.detach(), data.features),
                     f"matched >= {MATCH}": rec.frac_recovered,
                     "dead": float((~active.any(0)).float().mean()), "L0": float(active.sum(1).float().mean()),
                     "FVU": fvu(data.test, x_hat), "seconds": round(seconds, 2)})
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return rows
