"""Ground truth for transcoders: a synthetic map whose sparse input features write known
output directions.

:func:`synthetic_sparse_map` draws ``x = codes @ in_features`` (the sparse data of
:func:`saekit.ground_truth.synthetic_sparse_data`) and ``y = codes @ out_features``:
feature ``i`` reads along its input direction ``d_i`` in ``d_in`` dimensions and writes
its output direction ``e_i`` in ``d_out`` dimensions, the picture of an MLP that
transcoders (Dunefsky et al. 2024) are meant to recover. A transcoder from ``x`` to
``y`` can then be scored on both of its sides (:func:`transcoder_benchmark`): its
decoder rows against the ``e_i`` (what each latent writes) and its encoder columns
against the ``d_i`` (what each latent reads), beside a skip transcoder (Paulo et al.
2025) and an SAE on ``x`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from saekit.ground_truth import MATCH, check_positive_int, synthetic_sparse_data, unit_directions
from saekit.metrics import fvu, recovery
from saekit.training.api import fit

#: Sparse kinds of the transcoder benchmark.
TRANSCODER_KINDS = ("topk", "batchtopk")
#: What is fitted for each kind: a transcoder x → y, a skip transcoder, an SAE on x.
VARIANTS = ("transcoder", "skip transcoder", "SAE on x")
# The output directions come from their own stream, so that they do not depend on how
# many draws synthetic_sparse_data makes from the seed's stream.
_OUT_STREAM = 0x5EED


class SparseMap(NamedTuple):
    """A known sparse map from ``x`` to ``y``."""

    x: Tensor
    """``[n, d_in]`` inputs, ``codes @ in_features`` plus Gaussian noise."""
    y: Tensor
    """``[n, d_out]`` outputs, ``codes @ out_features`` plus Gaussian noise."""
    codes: Tensor
    """``[n, n_features]`` true non-negative sparse codes, shared by both sides."""
    in_features: Tensor
    """``[n_features, d_in]`` unit-norm input directions ``d_i``."""
    out_features: Tensor
    """``[n_features, d_out]`` unit-norm output directions ``e_i``."""


def synthetic_sparse_map(n: int, d_in: int = 32, d_out: int = 32, n_features: int = 64, *,
                         p_active: float = 0.06, noise: float = 0.0, seed: int = 0,
                         **options: Any) -> SparseMap:
    """Sparse features that read known input directions and write known output ones.

    ``x`` and the codes are :func:`saekit.ground_truth.synthetic_sparse_data` with these
    arguments (``options``: its ``feature_probs``, ``magnitude``, ``correlation``, ...);
    the output directions are random unit vectors in ``d_out`` dimensions, independent
    of the input ones, and ``y = codes @ out_features`` plus noise of std ``noise``
    (the same as ``x``'s). With ``n_features > d_in`` the input is in superposition,
    so ``y`` is not a linear function of ``x``: a transcoder must find which sparse
    features are present to predict it.
    """
    check_positive_int(d_out, "d_out")
    data = synthetic_sparse_data(n, d_in, n_features, p_active=p_active, noise=noise, seed=seed,
                                 dtype=torch.float64, **options)
    g = torch.Generator().manual_seed(seed + _OUT_STREAM)
    out_features = unit_directions(n_features, d_out, g)
    y = data.codes @ out_features
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=g, dtype=torch.float64)
    return SparseMap(data.x.float(), y.float(), data.codes.float(), data.features.float(), out_features.float())


def _selectivity(codes: Tensor, true_codes: Tensor, latent: Tensor) -> float:
    """Mean over true features of the correlation between the feature's code and the
    code of its matched latent (0 for a latent that never varies)."""
    c = codes[:, latent].double()
    a = true_codes.double()
    c, a = c - c.mean(0), a - a.mean(0)
    denom = (c.norm(dim=0) * a.norm(dim=0)).clamp_min(1e-12)
    return float(((c * a).sum(0) / denom).mean())


def chance_mmcs(n_learned: int, n_true: int, d: int, seed: int = 0) -> float:
    """MMCS (best |cos| per true feature) that random Gaussian directions reach: the level
    an MMCS must beat to say anything (high when ``d`` is small)."""
    g = torch.Generator().manual_seed(seed)
    return recovery(torch.randn(n_learned, d, generator=g), torch.randn(n_true, d, generator=g)).mmcs


def transcoder_benchmark(train: SparseMap, test: SparseMap, kinds: Sequence[str] = TRANSCODER_KINDS, *,
                         epochs: int = 10, batch_size: int = 512, lr: float = 4e-3, seed: int = 0,
                         d_dict: int | None = None) -> list[dict[str, Any]]:
    """Fit a transcoder, a skip transcoder and an SAE on ``x`` per kind; score both sides.

    Every dictionary has ``d_dict`` latents (default: the number of true features) and
    ``k`` = round(expected L0 of ``train``), trained ``epochs`` passes with batches of
    ``batch_size`` at ``lr`` (saekit's defaults otherwise, as
    :func:`saekit.ground_truth.ground_truth_benchmark`).

    Returns
    -------
    One row per (kind, variant): ``output MMCS`` and ``output matched >= 0.9`` (decoder
    rows against the output directions ``e_i``; None for the SAE, whose decoder writes
    ``x``), ``decoder-input MMCS`` (the SAE's decoder rows against the input directions
    ``d_i``, which is where its decoder lives; None for transcoders), ``input MMCS`` and
    ``input matched >= 0.9`` (encoder columns against the ``d_i``), ``selectivity``
    (mean over true features of the correlation, on the held-out rows, between the
    feature's code and the code of the latent whose decoder row matches it best),
    ``FVU`` of the dictionary's own target (``y``, or ``x`` for the SAE) on the held-out
    rows, ``L0`` and ``dead``. Encoders in superposition do not point along the ``d_i``
    (they must also cancel the other features' interference), so ``input MMCS`` stays
    well below 1 even for an SAE; :func:`chance_mmcs` gives the level of random
    directions.
    """
    n_features = len(train.in_features)
    width = n_features if d_dict is None else d_dict
    k = max(1, round(float((train.codes > 0).sum(1).double().mean())))
    rows = []
    for kind in kinds:
        for variant in VARIANTS:
            extra = {} if variant == "SAE on x" else {"target": train.y, "skip": variant == "skip transcoder"}
            t0 = time.time()
            d = fit(train.x, kind, d_dict=width, k=k, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                    **extra)
            seconds = time.time() - t0
            with torch.no_grad():
                codes = d.encode(test.x)
                active = d.active(codes)
                pred = d.decode(codes) if variant == "SAE on x" else d(test.x)
            W_dec, W_enc = d.W_dec.detach(), d.W_enc.detach().T
            sae = variant == "SAE on x"
            dec = recovery(W_dec, test.in_features if sae else test.out_features, threshold=MATCH)
            enc = recovery(W_enc, test.in_features, threshold=MATCH)
            rows.append({
                "kind": kind, "variant": variant, "d_dict": width, "k": k,
                "output MMCS": None if sae else dec.mmcs,
                f"output matched >= {MATCH}": None if sae else dec.frac_recovered,
                "decoder-input MMCS": dec.mmcs if sae else None,
                "input MMCS": enc.mmcs, f"input matched >= {MATCH}": enc.frac_recovered,
                "selectivity": _selectivity(codes, test.codes, dec.matched),
                "FVU": fvu(test.x if sae else test.y, pred),
                "L0": float(active.sum(1).float().mean()), "dead": float((~active.any(0)).float().mean()),
                "seconds": round(seconds, 2)})
    return rows

