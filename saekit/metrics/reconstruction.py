"""Metric functions on tensors: reconstruction, sparsity, feature recovery.

Conventions (DESIGN.md):

- FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖², with a per-dimension mean over the evaluated
  tokens; explained variance = 1 − FVU.
- L0 = mean number of active features per token. Firing is decided by the
  dictionary's own ``active()``, so the sparsity metrics take its bool output and
  never apply a rule of their own.
- SAEBench's core "shrinkage" metrics: ``l2_ratio``, ``relative_reconstruction_bias``
  and ``cosine_similarity``, with SAEBench's formulas.

Inputs are ``[..., d]`` tensors (leading dimensions are flattened into tokens) on any
device and of any float dtype. The one-shot functions compute in float64, so their
memory is about twice that of a float32 input; ``StreamingStats`` (``streaming.py``)
accumulates the same metrics batch by batch in float64 for data that does not fit
at once. CE/KL recovered need the model: ``downstream.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

# Floor on a row's norm when normalising directions, so a zero row gives cosine 0
# rather than nan.
_NORM_EPS = 1e-12

# Rows of the true × learned cosine matrix computed at once in `recovery`, so that
# matching 16k × 16k dictionaries needs tens of MB rather than a GB.
_MATCH_CHUNK = 1024


# ---------------------------------------------------------------------------
# Input checks


def _rows(t: Tensor, name: str) -> Tensor:
    """Flatten ``[..., d]`` to ``[n, d]``, checking it is a non-empty float tensor."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim < 1:
        raise ValueError(f"{name} must have shape [..., d], got a scalar")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
    t = t.reshape(-1, t.shape[-1])
    if t.shape[0] == 0:
        raise ValueError(f"{name} has no tokens (shape {tuple(t.shape)})")
    return t


def paired_rows(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``x``/``x_hat`` match and return both as float64 ``[n, d]``."""
    x, x_hat = _rows(x, "x"), _rows(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} "
                         f"and {tuple(x_hat.shape)} (after flattening leading dimensions)")
    return x.double(), x_hat.double()


def active_rows(active: Tensor) -> Tensor:
    """Check ``active`` is a bool ``[..., d_dict]`` tensor with tokens; return it as ``[n, d_dict]``."""
    if not isinstance(active, Tensor) or active.dtype != torch.bool:
        got = active.dtype if isinstance(active, Tensor) else type(active).__name__
        raise TypeError(f"active must be a bool tensor from the dictionary's active(), got {got}")
    if active.ndim < 1:
        raise ValueError("active must have shape [..., d_dict], got a scalar")
    active = active.reshape(-1, active.shape[-1])
    if active.shape[0] == 0:
        raise ValueError("active has no tokens")
    return active


# ---------------------------------------------------------------------------
# Per-token quantities shared by the one-shot functions and StreamingStats


def token_cosine(x: Tensor, x_hat: Tensor) -> Tensor:
    """cos(x, x̂) per token (row); 0 where either is the zero vector."""
    dot = (x * x_hat).sum(-1)
    denom = x.norm(dim=-1) * x_hat.norm(dim=-1)
    # A zero vector has cosine 0 with anything (as in F.cosine_similarity), not nan.
    return torch.where(denom > 0, dot / denom, torch.zeros_like(dot))


def token_l2_ratio(x: Tensor, x_hat: Tensor) -> Tensor:
    """‖x̂‖ / ‖x‖ per token (row)."""
    return x_hat.norm(dim=-1) / x.norm(dim=-1)


# ---------------------------------------------------------------------------
# Reconstruction


def fvu(x: Tensor, x_hat: Tensor) -> float:
    """Fraction of variance unexplained, Σ‖x − x̂‖² / Σ‖x − mean(x)‖².

    Parameters
    ----------
    x, x_hat
        Activations and reconstructions, ``[..., d]``.

    Returns
    -------
    float
        0 for a perfect reconstruction, 1 for predicting the per-dimension mean;
        ``inf`` (or ``nan``) when ``x`` has no variance.
    """
    x, x_hat = paired_rows(x, x_hat)
    sse = (x - x_hat).pow(2).sum()
    sst = (x - x.mean(0)).pow(2).sum()
    return (sse / sst).item()


def explained_variance(x: Tensor, x_hat: Tensor) -> float:
    """Explained variance, ``1 − fvu(x, x_hat)``."""
    return 1.0 - fvu(x, x_hat)


def l2_ratio(x: Tensor, x_hat: Tensor) -> float:
    """Mean over tokens of ‖x̂‖ / ‖x‖ (SAEBench); below 1 means shrinkage.

    A token with ‖x‖ = 0 makes the result ``inf``/``nan``: exclude BOS and padding
    upstream, as the harvest does.
    """
    x, x_hat = paired_rows(x, x_hat)
    return token_l2_ratio(x, x_hat).mean().item()


def relative_reconstruction_bias(x: Tensor, x_hat: Tensor) -> float:
    """SAEBench's relative reconstruction bias, E[‖x̂‖²] / E[x̂·x].

    This is 1/γ* for the best single gain γ* = argmin_γ E‖x − γx̂‖² = E[x̂·x] / E[‖x̂‖²]
    (Gated SAE paper, eq. 10). Below 1 means the reconstructions are systematically
    too short (shrinkage); 1 means no scalar rescaling of x̂ would help. Both
    expectations are over tokens, as a ratio of means (not a mean of ratios).
    """
    x, x_hat = paired_rows(x, x_hat)
    return (x_hat.pow(2).sum() / (x * x_hat).sum()).item()


def cosine_similarity(x: Tensor, x_hat: Tensor) -> float:
    """Mean over tokens of cos(x, x̂); a zero vector counts as cosine 0."""
    x, x_hat = paired_rows(x, x_hat)
    return token_cosine(x, x_hat).mean().item()


# ---------------------------------------------------------------------------
# Sparsity


def l0(active: Tensor) -> float:
    """Mean number of active features per token.

    Parameters
    ----------
    active
        Bool ``[..., d_dict]`` from the dictionary's ``active()``.
    """
    active = active_rows(active)
    return active.sum().item() / active.shape[0]


def firing_frequency(active: Tensor) -> Tensor:
    """Fraction of tokens on which each feature fires.

    Parameters
    ----------
    active
        Bool ``[..., d_dict]`` from the dictionary's ``active()``.

    Returns
    -------
    Tensor
        float64 ``[d_dict]`` on ``active``'s device.
    """
    active = active_rows(active)
    return active.sum(0).double() / active.shape[0]


class DeadDense(NamedTuple):
    """Dead and dense features by firing frequency."""

    dead: Tensor
    """Bool ``[d_dict]``: firing frequency below ``dead_below``."""
    dense: Tensor
    """Bool ``[d_dict]``: firing frequency above ``dense_above``."""
    frac_dead: float
    """Fraction of features that are dead."""
    frac_dense: float
    """Fraction of features that are dense."""


def dead_dense(freq: Tensor, dead_below: float = 1e-8, dense_above: float = 0.1) -> DeadDense:
    """Flag dead (almost never firing) and dense (firing very often) features.

    Parameters
    ----------
    freq
        Firing frequency per feature, ``[d_dict]`` (see :func:`firing_frequency`).
    dead_below
        A feature with frequency strictly below this is dead. The default 1e-8 means
        "never fired" on any evaluation set under 10⁸ tokens.
    dense_above
        A feature with frequency strictly above this is dense; 0.1 is SAEBench's
        ``freq_over_10_percent``.
    """
    if freq.ndim != 1:
        raise ValueError(f"freq must have shape [d_dict], got {tuple(freq.shape)}")
    if not 0.0 <= dead_below <= dense_above <= 1.0:
        raise ValueError(f"need 0 <= dead_below <= dense_above <= 1, got dead_below={dead_below}, "
                         f"dense_above={dense_above}")
    dead, dense = freq < dead_below, freq > dense_above
    n = max(1, freq.numel())
    return DeadDense(dead, dense, dead.sum().item() / n, dense.sum().item() / n)


class Histogram(NamedTuple):
    """A histogram of log10 firing frequency."""

    counts: Tensor
    """int64 ``[n_bins]``: features per bin."""
    edges: Tensor
    """float64 ``[n_bins + 1]``: bin edges in log10 frequency."""


def density_histogram(freq: Tensor, bins: int | Tensor = 50, *, eps: float = 1e-10) -> Histogram:
    """Histogram of log10(firing frequency + eps) over features.

    ``eps`` matches SAELens' ``log10(freq + 1e-10)`` (the values saved in
    ``sparsity.safetensors``), so dead features appear as a spike at log10(eps)
    instead of vanishing at −inf.

    Parameters
    ----------
    freq
        Firing frequency per feature, ``[d_dict]``.
    bins
        Number of equal-width bins over the data's range, or a 1-D tensor of edges.
    eps
        Added before the log.

    Returns
    -------
    Histogram
        ``(counts, edges)``, on the CPU.
    """
    if freq.ndim != 1 or freq.numel() == 0:
        raise ValueError(f"freq must be a non-empty [d_dict] tensor, got shape {tuple(freq.shape)}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    # torch.histogram runs on CPU float tensors only; d_dict values are cheap to move.
    logf = torch.log10(freq.detach().double().cpu() + eps)
    if isinstance(bins, Tensor):
        bins = bins.detach().double().cpu()
    elif bins < 1:
        raise ValueError(f"bins must be a positive int or a tensor of edges, got {bins}")
    counts, edges = torch.histogram(logf, bins=bins)
    return Histogram(counts.long(), edges)


# ---------------------------------------------------------------------------
# Feature recovery against a known dictionary


def unit_rows(t: Tensor, eps: float = _NORM_EPS) -> Tensor:
    """Rows scaled to unit L2 norm: the one row normaliser of saekit.

    Parameters
    ----------
    t
        ``[..., d]``; each vector along the last axis is normalised.
    eps
        Floor on a row's norm, so a zero row stays zero (its cosines are 0, not NaN).

    Returns
    -------
    Tensor
        Detached, in ``t``'s dtype promoted to at least float32 (half-precision dot
        products of unit vectors lose the third digit); float64 stays float64.
    """
    t = t.detach().to(torch.promote_types(t.dtype, torch.float32))
    return t / t.norm(dim=-1, keepdim=True).clamp_min(eps)


def _directions(t: Tensor, name: str) -> Tensor:
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape [n, d] with n >= 1, got {tuple(t.shape)}")
    return unit_rows(t)


def _best_match(learned: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
    """Max |cosine| with any learned row, and its index, for each true row."""
    learned = _directions(learned, "learned")
    true = _directions(true, "true").to(device=learned.device, dtype=learned.dtype)
    if learned.shape[1] != true.shape[1]:
        raise ValueError(f"learned and true directions live in different spaces: d = "
                         f"{learned.shape[1]} vs {true.shape[1]}")
    best = [(chunk @ learned.T).abs().max(dim=1) for chunk in true.split(_MATCH_CHUNK)]
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def mmcs(learned: Tensor, true: Tensor) -> float:
    """Mean max cosine similarity: mean over true features of the best |cos| with a learned one.

    Signs are ignored (|cos|), since a direction and its negative describe the same
    feature up to the sign of its code.

    Parameters
    ----------
    learned
        ``[n_learned, d]``, rows are directions (e.g. ``W_dec``); need not be unit-norm.
    true
        ``[n_true, d]``, the ground-truth directions.
    """
    return _best_match(learned, true)[0].mean().item()


class Recovery(NamedTuple):
    """How well a learned dictionary recovers known feature directions."""

    mmcs: float
    """Mean over true features of the max |cosine| with any learned direction."""
    frac_recovered: float
    """Fraction of true features whose max |cosine| is at least the threshold."""
    matched: Tensor
    """int64 ``[n_true]``: index of the best-matching learned row per true feature
    (several true features may share one learned row)."""
    max_cos: Tensor
    """``[n_true]``: that max |cosine| per true feature."""


def recovery(learned: Tensor, true: Tensor, threshold: float = 0.9) -> Recovery:
    """Match every true feature to its closest learned direction (by |cosine|).

    The matching is greedy per true feature, not one-to-one: a learned direction
    that sits between two true ones can be the best match for both. Use
    ``scipy.optimize.linear_sum_assignment`` on the cosine matrix for a one-to-one
    matching.

    Parameters
    ----------
    learned
        ``[n_learned, d]`` learned directions (rows).
    true
        ``[n_true, d]`` true directions (rows).
    threshold
        |cosine| at or above which a true feature counts as recovered.
    """
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    max_cos, matched = _best_match(learned, true)
    return Recovery(max_cos.mean().item(), (max_cos >= threshold).double().mean().item(),
                    matched, max_cos)


class Match(NamedTuple):
    """A one-to-one matching: ``rows[i]`` of the first set goes with ``cols[i]`` of the
    second (int64 ``[min(n_a, n_b)]``), at |cosine| ``cos[i]`` (float64)."""

    rows: Tensor
    cols: Tensor
    cos: Tensor


def match(a: Tensor, b: Tensor) -> Match:
    """Hungarian matching of the rows of ``a`` and ``b`` that maximises the total |cosine|.

    The one one-to-one matching of saekit (``scipy.optimize.linear_sum_assignment`` on
    the |cosine| matrix). Signs are ignored: a direction and its negative are one
    feature up to the sign of its code. The cost is cubic in the number of rows
    (seconds at 4k, long at 16k).

    Parameters
    ----------
    a, b
        ``[n_a, d]`` and ``[n_b, d]`` directions (rows; need not be unit-norm).
    """
    from scipy.optimize import linear_sum_assignment  # heavy: loaded when matching runs

    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"directions must be [n, d] with one d, got {tuple(a.shape)} and {tuple(b.shape)}")
    ua = unit_rows(a)
    sim = (ua @ unit_rows(b).to(ua.device, ua.dtype).T).abs().cpu().double().numpy()
    r, c = linear_sum_assignment(sim, maximize=True)
    return Match(torch.from_numpy(r), torch.from_numpy(c), torch.from_numpy(sim[r, c]).clamp(0, 1))
