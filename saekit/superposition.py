"""Toy models of superposition (Elhage et al. 2022), trained many at a time.

The ReLU-output model: ``n_features`` sparse inputs are squeezed into ``n_hidden`` <
``n_features`` dimensions and read back,

    h = W x,   x′ = ReLU(Wᵀ h + b),   loss = mean_batch Σ_i I_i (x_i − x′_i)²,

with ``W [n_hidden, n_features]``. Feature ``i`` is present with probability ``1 − S``
(``S`` the sparsity) and then uniform on [0, 1]; ``I_i`` is its importance
(``r ** i`` for a geometric decay). :func:`train_toy_models` trains a whole grid of
such models at once: ``W`` is ``[n_models, n_hidden, n_features]``, every model has its
own sparsity and importances, and one Adam steps them all (the loss is the sum of the
models' losses, so their gradients do not mix).

Measures (all batched over leading model dimensions): :func:`feature_norms`
(feature i is *represented* when ``‖W_i‖ > 0.5``), :func:`interference`
(Σ_{j≠i} (Ŵ_i·W_j)², the paper's superposition measure), :func:`dimensions_per_feature`
(D* = m / ‖W‖_F²), :func:`feature_dimensionality` (D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)²),
:func:`antipodal_partners` and :func:`adversarial_sensitivity`.

The paper's experiments, each one call that trains and summarises, are in
:mod:`saekit.superposition_experiments`. ``saekit.toy`` re-exports the main names; the dictionary benchmark on these models is in ``saekit.ground_truth`` and the
report (``saekit toy``) in ``saekit.toy_report``.

Deviations from the paper, each a default that can be changed: every setting trains
``n_instances`` models from different initialisations and keeps the one with the
lowest loss on a held-out batch shared by the instances (small models stop in local
minima: with n = 2, m = 1, a run whose two weights start with the same sign seldom
crosses to the antipodal solution); the report trains with a higher learning rate
decayed along a cosine and fewer steps than the paper's Adam at 1e-3 for 10k steps, so
that everything runs in minutes on a CPU; adversarial sensitivity is measured by the
spectral norm of the input-output Jacobian (and a small step along its top singular
vector), not by the paper's attack. Training runs on one intra-op thread by default
(:func:`torch_threads`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "ToyModels", "train_toy_models", "sample_toy_inputs", "toy_forward", "torch_threads",
    "feature_norms", "interference", "dimensions_per_feature", "feature_dimensionality",
    "feature_angles", "antipodal_partners", "Sensitivity", "adversarial_sensitivity",
    "REGIMES", "REPRESENTED", "SUPERPOSED",
]

#: ‖W_i‖ above which feature i counts as represented (the paper's threshold).
REPRESENTED = 0.5
#: Interference Σ_{j≠i} (Ŵ_i·W_j)² above which a represented feature counts as sharing
#: its dimensions with others (in superposition).
SUPERPOSED = 0.1
#: Regimes of :func:`saekit.superposition_experiments.phase_diagram`, indexed by its ``regime`` codes.
REGIMES = ("not represented", "dedicated dimension", "superposition", "other")

Schedule = Literal["constant", "cosine"]


# ---------------------------------------------------------------------------
# The model and its training


class ToyModels(NamedTuple):
    """A batch of trained toy models, one per setting."""

    W: Tensor
    """``[n_models, n_hidden, n_features]``: column ``W[k, :, i]`` is feature i's direction."""
    b: Tensor
    """``[n_models, n_features]`` output biases."""
    importance: Tensor
    """``[n_models, n_features]`` importance ``I_i`` of each feature in the loss."""
    sparsity: Tensor
    """``[n_models]`` sparsity S: each feature is present with probability ``1 − S``."""
    loss: Tensor
    """``[n_models]`` loss on a held-out batch (the best of the instances trained)."""

    def model(self, k: int) -> ToyModels:
        """The ``k``-th model alone (negative ``k`` counts from the end), as a batch of one."""
        k = range(len(self.W))[k]
        return ToyModels(*(t[k:k + 1] for t in self))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (``None``: leave the setting alone),
    then restore the previous count. The toy models' tensors are small (at most a few
    hundred thousand entries per step), so a second thread gains little, and on a busy
    machine its spin-waiting made a step 5x to 50x slower in our measurements."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(_check_int(n, "threads"))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _as_sparsity(sparsity: float | Sequence[float] | Tensor) -> Tensor:
    s = torch.as_tensor(sparsity, dtype=torch.float32).detach().cpu().reshape(-1)
    if s.numel() == 0:
        raise ValueError("sparsity is empty: give one value per model")
    if not ((s >= 0) & (s < 1)).all():  # also rejects nan
        raise ValueError(f"sparsity must lie in [0, 1) (feature probability 1 - S > 0), got {s.tolist()}")
    return s


def _as_importance(importance: float | Sequence[float] | Tensor, n_features: int) -> Tensor:
    """``[n_models or 1, n_features]``; a float r gives the geometric decay r**i."""
    if isinstance(importance, (int, float)) and not isinstance(importance, bool):
        r = float(importance)
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"importance decay must be a finite float > 0, got {importance}")
        return (r ** torch.arange(n_features, dtype=torch.float64)).float()[None]
    imp = torch.as_tensor(importance, dtype=torch.float32).detach().cpu()
    if imp.ndim == 1:
        imp = imp[None]
    if imp.ndim != 2 or imp.shape[1] != n_features:
        raise ValueError(f"importance must be a float, [n_features] = [{n_features}] or "
                         f"[n_models, {n_features}], got shape {tuple(imp.shape)}")
    if not (torch.isfinite(imp) & (imp > 0)).all():
        raise ValueError("importance must be finite and > 0")
    return imp


def sample_toy_inputs(sparsity: Tensor, n_features: int, batch: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """``[n_models, batch, n_features]`` inputs: each feature present with probability
    ``p = 1 − sparsity[k]`` (independently), then uniform on [0, 1].

    One uniform draw ``u`` per entry does both: the feature is present when ``u < p``,
    and given that, ``u / p`` is uniform on [0, 1].
    """
    p = (1 - sparsity)[:, None, None]
    u = torch.rand(sparsity.numel(), batch, n_features, generator=generator)
    return torch.where(u < p, u / p, 0.0)


def toy_forward(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``x′ = ReLU(Wᵀ W x + b)`` for ``x [n_models, batch, n_features]``."""
    h = x @ W.transpose(-1, -2)                    # [n_models, batch, n_hidden]
    return torch.relu(h @ W + b[:, None, :])


def _losses(W: Tensor, b: Tensor, importance: Tensor, x: Tensor) -> Tensor:
    """``[n_models]``: mean over the batch of Σ_i I_i (x_i − x′_i)²."""
    err = (x - toy_forward(W, b, x)).pow(2)
    return (err * importance[:, None, :]).sum(-1).mean(-1)


def train_toy_models(
    n_features: int,
    n_hidden: int,
    sparsity: float | Sequence[float] | Tensor,
    importance: float | Sequence[float] | Tensor = 1.0,
    *,
    n_instances: int = 1,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    lr_schedule: Schedule = "constant",
    eval_batch: int = 8192,
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = False,
    desc: str = "toy models",
) -> ToyModels:
    """Train one toy ReLU-output model per setting, all at once.

    Parameters
    ----------
    n_features, n_hidden
        ``n`` features squeezed into ``m < n`` hidden dimensions.
    sparsity
        S per model (a float for one model, or a sequence/tensor ``[n_models]``), in
        [0, 1): each feature is present with probability ``1 − S``.
    importance
        A float ``r`` gives importances ``r ** i`` (1.0: uniform) for every model; a
        ``[n_features]`` tensor is shared by every model; ``[n_models, n_features]``
        gives each model its own. ``n_models`` is the number of sparsities or of
        importance rows; where both are given they must agree (or one be 1).
    n_instances
        Models trained per setting from different initialisations; the one with the
        lowest held-out loss is kept.
    steps, batch_size, lr, lr_schedule
        Adam, ``lr`` constant (the paper: 1e-3, 10k steps, batch 1024) or decayed
        to 0 along a cosine.
    eval_batch
        Held-out inputs per setting on which the instances are compared (the same
        inputs for every instance of a setting).
    seed
        Seeds the initialisation and every batch.
    threads
        Intra-op torch threads while training (:func:`torch_threads`); ``None`` keeps
        torch's setting.
    progress
        Show a progress bar over the steps.

    Returns
    -------
    ToyModels
        The best instance of each setting; ``W`` initialised Xavier-normal as the
        paper's code does, ``b`` at 0.
    """
    n_features = _check_int(n_features, "n_features", 2)
    n_hidden = _check_int(n_hidden, "n_hidden")
    if n_hidden >= n_features:
        raise ValueError(f"n_hidden must be < n_features (superposition needs more features than "
                         f"dimensions), got n_hidden={n_hidden}, n_features={n_features}")
    for value, name in ((n_instances, "n_instances"), (steps, "steps"), (batch_size, "batch_size"),
                        (eval_batch, "eval_batch")):
        _check_int(value, name)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite float > 0, got {lr}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    S, imp = _as_sparsity(sparsity), _as_importance(importance, n_features)
    n_models = max(S.numel(), imp.shape[0])
    if {S.numel(), imp.shape[0]} - {1, n_models}:
        raise ValueError(f"{S.numel()} sparsities and {imp.shape[0]} importance rows: give one per model "
                         "(or a single one for all)")
    S, imp = S.expand(n_models).contiguous(), imp.expand(n_models, n_features).contiguous()
    with torch_threads(threads):
        return _train(n_features, n_hidden, S, imp, n_instances, steps, batch_size, lr, lr_schedule,
                      eval_batch, seed, progress, desc)


def _train(n_features: int, n_hidden: int, S: Tensor, imp: Tensor, n_instances: int, steps: int,
           batch_size: int, lr: float, lr_schedule: str, eval_batch: int, seed: int, progress: bool,
           desc: str) -> ToyModels:
    n_models = len(S)
    S_all, imp_all = S.repeat_interleave(n_instances), imp.repeat_interleave(n_instances, 0)
    total = n_models * n_instances
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(total, n_hidden, n_features, generator=g)
         * math.sqrt(2.0 / (n_hidden + n_features))).requires_grad_()
    b = torch.zeros(total, n_features, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    bar = range(steps)
    if progress:
        bar = tqdm(bar, desc=desc, unit="step", mininterval=0.5)
    for step in bar:
        if lr_schedule == "cosine":
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = sample_toy_inputs(S_all, n_features, batch_size, g)
        loss = _losses(W, b, imp_all, x).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        held_out = torch.Generator().manual_seed(seed + 1)
        x = sample_toy_inputs(S, n_features, eval_batch, held_out).repeat_interleave(n_instances, 0)
        losses = _losses(W, b, imp_all, x).reshape(n_models, n_instances)
        best = losses.argmin(1) + torch.arange(n_models) * n_instances
        return ToyModels(W.detach()[best].clone(), b.detach()[best].clone(), imp, S,
                         losses.min(1).values)


# ---------------------------------------------------------------------------
# Measures (batched over any leading dimensions of W [..., n_hidden, n_features])


def feature_norms(W: Tensor) -> Tensor:
    """``[..., n_features]``: ‖W_i‖; feature i is represented when it exceeds 0.5."""
    return W.norm(dim=-2)


def _overlaps(W: Tensor) -> Tensor:
    """``[..., n, n]``: entry (i, j) is Ŵ_i · W_j (Ŵ_i = 0 where W_i = 0)."""
    unit = W / feature_norms(W).clamp_min(1e-12)[..., None, :]
    return unit.transpose(-1, -2) @ W


def interference(W: Tensor) -> Tensor:
    """``[..., n_features]``: Σ_{j≠i} (Ŵ_i · W_j)², how much of the other features lies
    along feature i's direction: 0 for a feature with a dimension to itself, large for
    one that shares its dimensions (the paper's superposition measure)."""
    sq = _overlaps(W).pow(2)
    return sq.sum(-1) - sq.diagonal(dim1=-2, dim2=-1)


def dimensions_per_feature(W: Tensor) -> Tensor:
    """``[...]``: D* = m / ‖W‖_F², hidden dimensions per (effectively) learned feature."""
    return W.shape[-2] / W.pow(2).sum((-2, -1)).clamp_min(1e-12)


def feature_dimensionality(W: Tensor) -> Tensor:
    """``[..., n_features]``: D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², the fraction of a dimension
    feature i has to itself: 1 alone, 1/2 in an antipodal pair, 2/5 in a pentagon (at any
    norm), 0 when not represented. The paper's formula (the numerator is ‖W_i‖², not
    ‖W_i‖⁴: only then is a lone feature's D_i 1 whatever its norm)."""
    return feature_norms(W).pow(2) / _overlaps(W).pow(2).sum(-1).clamp_min(1e-12)


def feature_angles(W: Tensor) -> Tensor:
    """``[..., n_features]``: angle of each feature's direction in degrees, for
    ``n_hidden = 2``."""
    if W.shape[-2] != 2:
        raise ValueError(f"feature angles need n_hidden = 2, got W of shape {tuple(W.shape)}")
    return torch.rad2deg(torch.atan2(W[..., 1, :], W[..., 0, :]))


def antipodal_partners(W: Tensor) -> tuple[Tensor, Tensor]:
    """Each feature's most opposite other feature: ``(partner, cosine)``, both
    ``[..., n_features]``; a cosine near −1 means the two sit antipodally."""
    unit = W / feature_norms(W).clamp_min(1e-12)[..., None, :]
    cos = unit.transpose(-1, -2) @ unit
    cos = cos + 3 * torch.eye(W.shape[-1])  # never one's own partner
    best = cos.min(-1)
    return best.indices, best.values


class Sensitivity(NamedTuple):
    """How far a small input perturbation can move each model's output."""

    jacobian_norm: Tensor
    """``[n_models]``: mean over typical inputs of the spectral norm of ∂x′/∂x, the
    first-order worst-case ‖Δx′‖ / ‖δ‖."""
    attack_gain: Tensor
    """``[n_models]``: mean ‖x′(x + δ) − x′(x)‖ / ε with δ of norm ε along the top
    right singular vector (the better of ±), measured through the ReLU."""
    global_bound: Tensor
    """``[n_models]``: ‖WᵀW‖₂ = σ_max(W)², the worst case over all inputs (every output
    in its linear piece); at least ‖W‖_F² / m = 1/D*, the features per dimension."""
    epsilon: float
    """Perturbation norm of the explicit attack."""
    n_inputs: Tensor
    """``[n_models]``: inputs averaged over (those with at least one feature present)."""


@torch.no_grad()
def adversarial_sensitivity(models: ToyModels, n_inputs: int = 2048, epsilon: float = 1e-3,
                            seed: int = 0) -> Sensitivity:
    """Worst-case output change under a small input perturbation, per model.

    On each model's own input distribution (inputs with no feature present are
    skipped: nothing to attack), the Jacobian of ``x ↦ x′`` is ``diag(1[pre > 0]) WᵀW``;
    its spectral norm is the most a perturbation of norm ε can move the output, to
    first order. A dense model keeps its represented features orthogonal, so the norm
    is about 1 (one feature's own reconstruction); with features in superposition
    ``W_iᵀ W`` has weight on the other features too, and the norm grows with the
    interference. The explicit attack steps ε along the top singular vector and
    measures the real change through the ReLU. ``global_bound`` drops the input
    distribution: the largest gain any input could see.
    """
    _check_int(n_inputs, "n_inputs")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite float > 0, got {epsilon}")
    W, b = models.W, models.b
    g = torch.Generator().manual_seed(seed)
    x = sample_toy_inputs(models.sparsity, W.shape[-1], n_inputs, g)
    keep = (x > 0).any(-1)                                   # [n_models, n_inputs]
    gram = W.transpose(-1, -2) @ W                           # [n_models, n, n]
    gate = ((x @ gram + b[:, None, :]) > 0).to(W.dtype)      # outputs in their linear piece
    J = gate[..., :, None] * gram[:, None]                   # [n_models, n_inputs, n, n]
    _, s, Vh = torch.linalg.svd(J)
    direction = Vh[..., 0, :]
    out = toy_forward(W, b, x)
    gains = torch.stack([(toy_forward(W, b, x + sign * epsilon * direction) - out).norm(dim=-1)
                         for sign in (1, -1)]).amax(0) / epsilon
    count = keep.sum(-1)
    denom = count.clamp_min(1).to(W.dtype)
    return Sensitivity((s[..., 0] * keep).sum(-1) / denom, (gains * keep).sum(-1) / denom,
                       torch.linalg.matrix_norm(W, ord=2).pow(2), float(epsilon), count)
