"""Standard errors over windows, by a bootstrap of per-window sums.

The unit of resampling is the window, not the token: tokens of one window share their
context, so their errors are correlated and a per-token standard error would be too
small. Every headline number saekit reports is a smooth function of sums over tokens
(a mean, a ratio of means, a fraction recovered), so each window contributes one row
of sums, a bootstrap sample is a weighted total of those rows, and the statistic is
recomputed from the totals. That costs one matrix product per batch of resamples and
never touches the model again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

#: Bootstrap resamples; the standard error of an SE estimate is about SE / sqrt(2 * B).
N_BOOT = 1000


def bootstrap_se(statistic: Callable[[Tensor], Tensor], sums: Tensor, n_boot: int = N_BOOT,
                 seed: int = 0, chunk: int = 200) -> Tensor:
    """Bootstrap standard error of ``statistic(totals)`` over windows.

    Parameters
    ----------
    statistic
        Maps totals ``[..., m]`` (sums over windows) to statistics ``[..., q]``.
    sums
        ``[n_windows, m]``: each window's sums.
    n_boot, seed
        Resamples (windows drawn with replacement) and the generator's seed.

    Returns
    -------
    ``[q]``: the standard deviation of the statistic over resamples (NaN where fewer
    than two windows, or where the statistic is undefined in every resample).
    """
    sums = sums.double()
    n = sums.shape[0]
    q = statistic(sums.sum(0, keepdim=True)).shape[-1]
    if n < 2:
        return torch.full((q,), float("nan"), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    out = []
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        idx = torch.randint(n, (b, n), generator=g)
        weights = torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(b, n, dtype=torch.float64))
        out.append(statistic(weights @ sums))
    stats = torch.cat(out)
    ok = torch.isfinite(stats)
    mean = torch.where(ok, stats, 0).sum(0) / ok.sum(0)
    var = torch.where(ok, (stats - mean) ** 2, 0).sum(0) / (ok.sum(0) - 1)
    return var.sqrt()


def mean_se(values) -> float:
    """Standard error of the mean of independent items (NaNs dropped; NaN below two)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    x = x[~torch.isnan(x)]
    return float(x.std() / len(x) ** 0.5) if len(x) > 1 else float("nan")


def fvu_with_se(x: Tensor, x_hat: Tensor, window: Tensor, n_boot: int = N_BOOT,
                seed: int = 0) -> tuple[float, float]:
    """FVU = Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over rows, and its bootstrap SE over windows.

    ``window``: ``[n_rows]``, the window each row came from (for harvested activations,
    ``mask.nonzero()[:, 0]``).
    """
    if not (x.shape == x_hat.shape and x.ndim == 2 and window.shape == x.shape[:1]):
        raise ValueError(f"x {tuple(x.shape)}, x_hat {tuple(x_hat.shape)} and window "
                         f"{tuple(window.shape)} must be [n, d], [n, d] and [n]")
    _, inv = torch.unique(window, return_inverse=True)
    w = int(inv.max()) + 1 if len(inv) else 0
    x64 = x.double()
    sums = torch.zeros(w, 3 + x.shape[1], dtype=torch.float64)
    sums[:, 0].index_add_(0, inv, (x64 - x_hat.double()).pow(2).sum(1))
    sums[:, 1].index_add_(0, inv, x64.pow(2).sum(1))
    sums[:, 2].index_add_(0, inv, torch.ones(len(x), dtype=torch.float64))
    sums[:, 3:].index_add_(0, inv, x64)

    def fvu(t: Tensor) -> Tensor:
        var = t[..., 1] - t[..., 3:].pow(2).sum(-1) / t[..., 2]
        return (t[..., 0] / var)[..., None]

    value = float(fvu(sums.sum(0))[0])
    return value, float(bootstrap_se(fvu, sums, n_boot, seed)[0])


def paired_difference(rows: list[dict], key: str, seed: int = 0, n_boot: int = 10_000) -> dict:
    """A description score against its random-description control, paired by item.

    Over the ``rows`` (one per feature) that have finite ``key`` and ``"random_" + key``:
    ``n``, the two means (``value``, ``random``), their mean ``difference`` and its
    bootstrap 95% interval over items (``ci95``; the difference itself below two items).
    Only ``n`` when no row has both.
    """
    def finite(v: object) -> bool:
        return isinstance(v, int | float) and v == v and abs(v) != float("inf")

    pairs = [(r[key], r["random_" + key]) for r in rows if finite(r.get(key)) and finite(r.get("random_" + key))]
    out: dict = {"n": len(pairs)}
    if not pairs:
        return out
    a, b = np.array(pairs, dtype=float).T
    d = a - b
    if len(d) > 1:
        boot = np.random.default_rng(seed).choice(d, (n_boot, len(d))).mean(1)
        ci = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    else:
        ci = [float(d[0]), float(d[0])]
    return out | {"value": float(a.mean()), "random": float(b.mean()), "difference": float(d.mean()), "ci95": ci}
