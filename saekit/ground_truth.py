"""Ground truth for dictionary learning: fit every dictionary kind on data whose features are known.

Two sources of known features: the hidden activations ``h = W x`` of a trained toy
model of superposition (:mod:`saekit.superposition`; the true features are the
columns ``W_i`` of its represented features, directions in the m-dimensional hidden
space) and :func:`saekit.toy.synthetic_sparse_data`. :func:`ground_truth_benchmark`
scores each fitted dictionary by MMCS, the fraction of true features matched at
|cos| ≥ 0.9, dead latents, L0 and FVU. ``saekit toy`` (:mod:`saekit.toy_report`)
runs it on both.

Only the standard library loads at import time; torch loads when a function runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from torch import Tensor

    from saekit.superposition import ToyModels

#: Dictionary kinds of the ground-truth benchmark.
KINDS = ("relu", "topk", "batchtopk", "jumprelu", "snmf")
#: |cosine| at or above which a true feature counts as recovered.
MATCH = 0.9


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
    import torch

    from saekit.superposition import REPRESENTED, feature_norms, sample_toy_inputs

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
    """:func:`saekit.toy.synthetic_sparse_data` (uniform magnitudes on [0.5, 1.5]) split
    into fit and held-out rows."""
    from saekit.toy import synthetic_sparse_data

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
    lu = learned.double() / learned.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    tu = true.double() / true.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
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
    import torch

    import saekit
    from saekit.metrics import fvu, recovery

    jobs: list[tuple[GroundTruthData, str, int | None]] = []
    for data in datasets:
        for kind in kinds:
            jobs.append((data, kind, None))
            width = dictionary_settings(kind, data)[0]
            if kind == "snmf" and width_control and width < data.d_dict:
                jobs.append((data, "topk", width))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="ground truth", unit="fit")
    rows = []
    for data, kind, width in jobs:
        d_dict, k, options = dictionary_settings(kind, data, width)
        kw = {} if kind == "snmf" else dict(batch_size=batch_size, epochs=epochs, lr=lr)
        t0 = time.time()
        dictionary = saekit.fit(data.train, kind, d_dict=d_dict, k=k, seed=seed, **kw, **options)
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
