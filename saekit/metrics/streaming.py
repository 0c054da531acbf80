"""Streaming accumulation: the reconstruction and sparsity metrics (:class:`StreamingStats`),
and Pearson correlations between two code matrices over the same tokens (:class:`Correlation`)."""

from __future__ import annotations

import torch
from torch import Tensor

from saekit.metrics.reconstruction import (
    DeadDense,
    active_rows,
    dead_dense,
    paired_rows,
    token_cosine,
    token_l2_ratio,
)


class StreamingStats:
    """Accumulate the reconstruction and sparsity metrics over batches, in float64.

    The metrics over many batches equal the one-shot metrics over their
    concatenation (up to float64 rounding). FVU's denominator is kept as a
    per-dimension mean and sum of squared deviations, merged with Chan et al.'s
    pairwise update: the textbook Σ‖x‖² − ‖Σx‖²/n cancels catastrophically on
    activations with a large mean (residual streams), this does not.
    Accumulators live on the first batch's device, so updating never synchronises
    with a GPU; reading a metric does.

    Examples
    --------
    >>> stats = StreamingStats()
    >>> for x in batches:                                   # doctest: +SKIP
    ...     codes = d.encode(x)
    ...     stats.update(x, d.decode(codes), d.active(codes))
    >>> stats.fvu(), stats.l0()                             # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.n_tokens = 0
        self._mean: Tensor | None = None   # [d] per-dimension mean of x
        self._m2: Tensor | None = None     # [d] Σ (x − mean)² per dimension
        self._sse = 0.0                    # Σ‖x − x̂‖²
        self._xhat_sq = 0.0                # Σ‖x̂‖²
        self._dot = 0.0                    # Σ x·x̂
        self._l2_ratio = 0.0               # Σ ‖x̂‖/‖x‖
        self._cos = 0.0                    # Σ cos(x, x̂)
        self.n_active_tokens = 0
        self._fired: Tensor | None = None  # [d_dict] int64 firing counts

    def update(self, x: Tensor, x_hat: Tensor, active: Tensor | None = None) -> StreamingStats:
        """Add a batch; returns ``self``.

        Parameters
        ----------
        x, x_hat
            Activations and reconstructions, ``[..., d]``.
        active
            Optional bool ``[..., d_dict]`` from the dictionary's ``active()`` for the
            same tokens; needed for :meth:`l0` and :meth:`firing_frequency`.
        """
        if isinstance(x, Tensor) and isinstance(x_hat, Tensor) and x.numel() == x_hat.numel() == 0:
            return self  # a stream's last batch can be empty
        return self.merge(self._from_batch(x, x_hat, active))

    @classmethod
    def _from_batch(cls, x: Tensor, x_hat: Tensor, active: Tensor | None) -> StreamingStats:
        x, x_hat = paired_rows(x, x_hat)
        s = cls()
        s.n_tokens = x.shape[0]
        s._mean = x.mean(0)
        s._m2 = (x - s._mean).pow(2).sum(0)
        s._sse = (x - x_hat).pow(2).sum()
        s._xhat_sq = x_hat.pow(2).sum()
        s._dot = (x * x_hat).sum()
        s._l2_ratio = token_l2_ratio(x, x_hat).sum()
        s._cos = token_cosine(x, x_hat).sum()
        if active is not None:
            active = active_rows(active)
            if active.shape[0] != s.n_tokens:
                raise ValueError(f"active has {active.shape[0]} tokens but x has {s.n_tokens}")
            s.n_active_tokens = active.shape[0]
            s._fired = active.sum(0)
        return s

    def merge(self, other: StreamingStats) -> StreamingStats:
        """Fold another accumulator into this one (e.g. from another process); returns ``self``."""
        self._merge_moments(other)
        self._sse = self._sse + other._sse
        self._xhat_sq = self._xhat_sq + other._xhat_sq
        self._dot = self._dot + other._dot
        self._l2_ratio = self._l2_ratio + other._l2_ratio
        self._cos = self._cos + other._cos
        self._merge_firing(other)
        return self

    def _merge_moments(self, other: StreamingStats) -> None:
        if other.n_tokens == 0:
            return
        if self.n_tokens == 0:
            self.n_tokens = other.n_tokens
            self._mean, self._m2 = other._mean.clone(), other._m2.clone()
            return
        if other._mean.shape != self._mean.shape:
            raise ValueError(f"batches differ in width: d = {self._mean.shape[0]} vs "
                             f"{other._mean.shape[0]}")
        na, nb = self.n_tokens, other.n_tokens
        n = na + nb
        delta = other._mean.to(self._mean.device) - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + other._m2.to(self._m2.device) + delta.pow(2) * (na * nb / n)
        self.n_tokens = n

    def _merge_firing(self, other: StreamingStats) -> None:
        if other._fired is None:
            return
        if self._fired is None:
            self._fired = other._fired.clone()
        elif other._fired.shape != self._fired.shape:
            raise ValueError(f"active differs in width: d_dict = {self._fired.shape[0]} vs "
                             f"{other._fired.shape[0]}")
        else:
            self._fired = self._fired + other._fired.to(self._fired.device)
        self.n_active_tokens += other.n_active_tokens

    # -- reading ---------------------------------------------------------------

    def _need_tokens(self) -> None:
        if self.n_tokens == 0:
            raise ValueError("StreamingStats has seen no tokens: call update() first")

    def fvu(self) -> float:
        """Fraction of variance unexplained over every token seen."""
        self._need_tokens()
        return float(self._sse / self._m2.sum())

    def explained_variance(self) -> float:
        """``1 − fvu()``."""
        return 1.0 - self.fvu()

    def l2_ratio(self) -> float:
        """Mean over tokens of ‖x̂‖ / ‖x‖."""
        self._need_tokens()
        return float(self._l2_ratio / self.n_tokens)

    def relative_reconstruction_bias(self) -> float:
        """E[‖x̂‖²] / E[x̂·x], see :func:`relative_reconstruction_bias`."""
        self._need_tokens()
        return float(self._xhat_sq / self._dot)

    def cosine_similarity(self) -> float:
        """Mean over tokens of cos(x, x̂)."""
        self._need_tokens()
        return float(self._cos / self.n_tokens)

    def firing_frequency(self) -> Tensor:
        """float64 ``[d_dict]``: fraction of tokens on which each feature fired."""
        if self._fired is None:
            raise ValueError("no firing data: pass active= to update()")
        return self._fired.double() / self.n_active_tokens

    def l0(self) -> float:
        """Mean number of active features per token."""
        if self._fired is None:
            raise ValueError("no firing data: pass active= to update()")
        return self._fired.sum().item() / self.n_active_tokens

    def dead_dense(self, dead_below: float = 1e-8, dense_above: float = 0.1) -> DeadDense:
        """:func:`dead_dense` on the accumulated firing frequency."""
        return dead_dense(self.firing_frequency(), dead_below, dense_above)

    def summary(self) -> dict[str, float]:
        """Every scalar metric available, as a flat dict (a row of a metrics table)."""
        out = {
            "n_tokens": float(self.n_tokens),
            "fvu": self.fvu(),
            "explained_variance": self.explained_variance(),
            "l2_ratio": self.l2_ratio(),
            "relative_reconstruction_bias": self.relative_reconstruction_bias(),
            "cosine_similarity": self.cosine_similarity(),
        }
        if self._fired is not None:
            dd = self.dead_dense()
            out.update(l0=self.l0(), frac_dead=dd.frac_dead, frac_dense=dd.frac_dense)
        return out


#: Variance below which a code counts as constant (a dead feature): no correlation.
CONSTANT_VARIANCE = 1e-24


class Correlation:
    """Streaming Pearson correlation between columns of two matrices over the same rows.

    Sums are float64, and each batch is shifted by the first batch's column means before
    the products, so ``E[ab] − E[a]E[b]`` does not cancel for codes with a large mean
    (the textbook ``Σab/n − mean_a·mean_b`` on raw sums would).

    Parameters
    ----------
    a, b
        Either the widths ``d_a`` and ``d_b`` (every column of ``a`` against every column
        of ``b``: :meth:`pearson` is ``[d_a, d_b]``, from ``Σ aᵀb``), or two int64 index
        tensors of one length ``m`` (column ``cols_a[i]`` of ``a`` against column
        ``cols_b[i]`` of ``b``, e.g. the pairs of a matching: :meth:`pearson` is ``[m]``).
    device
        Where the sums live; default: the CPU for all pairs, the first batch's device for
        matched columns.

    Examples
    --------
    >>> corr = Correlation(match.rows, match.cols)             # doctest: +SKIP
    >>> for ca, cb in code_batches:
    ...     corr.update(ca, cb)
    >>> corr.pearson()                                          # [m] float64, NaN if dead
    """

    def __init__(self, a: int | Tensor, b: int | Tensor, device: torch.device | str | None = None):
        self.paired = isinstance(a, Tensor)
        self.cols_a, self.cols_b = (a, b) if self.paired else (None, None)
        if self.paired and (not isinstance(b, Tensor) or a.shape != b.shape or a.ndim != 1):
            raise ValueError("matched columns must be two 1-D index tensors of one length")
        self.n_tokens = 0
        self.shift: tuple[Tensor, Tensor] | None = None
        self.sum_a = self.sum_b = self.sq_a = self.sq_b = self.cross = None
        if not self.paired:
            self._allocate(int(a), int(b), int(a), torch.device(device or "cpu"))
        self.device = None if device is None else torch.device(device)

    def _allocate(self, d_a: int, d_b: int, m: int, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        self.sum_a, self.sum_b = torch.zeros(d_a, **f64), torch.zeros(d_b, **f64)
        self.sq_a, self.sq_b = torch.zeros(d_a, **f64), torch.zeros(d_b, **f64)
        self.cross = torch.zeros(m, **f64) if self.paired else torch.zeros(d_a, d_b, **f64)

    def update(self, a: Tensor, b: Tensor) -> Correlation:
        """Add a batch: ``a [n, ·]`` and ``b [n, ·]``, row t of each the same token. Returns ``self``."""
        if not len(a):
            return self
        if self.paired:
            if self.cross is None:
                m = len(self.cols_a)
                self._allocate(m, m, m, self.device or a.device)
            a, b = a[:, self.cols_a.to(a.device)], b[:, self.cols_b.to(b.device)]
        dev = self.cross.device
        a, b = a.to(dev, torch.float64), b.to(dev, torch.float64)
        if self.shift is None:
            self.shift = (a.mean(0), b.mean(0))
        a, b = a - self.shift[0], b - self.shift[1]
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sq_a += (a * a).sum(0)
        self.sq_b += (b * b).sum(0)
        self.cross += (a * b).sum(0) if self.paired else a.T @ b
        self.n_tokens += len(a)
        return self

    def _need_tokens(self) -> None:
        if self.n_tokens == 0:
            raise ValueError(f"{type(self).__name__} has seen no tokens: call update() first")

    def variances(self) -> tuple[Tensor, Tensor]:
        """Per-column variances of ``a`` and ``b`` (float64; the matched columns when paired)."""
        self._need_tokens()
        ma, mb = self.sum_a / self.n_tokens, self.sum_b / self.n_tokens
        return (self.sq_a / self.n_tokens - ma * ma).clamp_min(0), (self.sq_b / self.n_tokens - mb * mb).clamp_min(0)

    def live(self) -> tuple[Tensor, Tensor]:
        """Bool masks of the columns whose values vary (a correlation exists)."""
        va, vb = self.variances()
        return va > CONSTANT_VARIANCE, vb > CONSTANT_VARIANCE

    def pearson(self, rows: slice = slice(None)) -> Tensor:
        """float64 Pearson correlations, ``[rows, d_b]`` (all pairs) or ``[rows]`` of the
        ``m`` matched columns; NaN where a column never varies."""
        self._need_tokens()
        n = self.n_tokens
        va, vb = self.variances()
        ma, mb, va = self.sum_a[rows] / n, self.sum_b / n, va[rows]
        if self.paired:
            mb, vb = mb[rows], vb[rows]
            cov, var = self.cross[rows] / n - ma * mb, va * vb
            ok = (va > CONSTANT_VARIANCE) & (vb > CONSTANT_VARIANCE)
        else:
            cov, var = self.cross[rows] / n - ma[:, None] * mb[None, :], va[:, None] * vb[None, :]
            ok = (va > CONSTANT_VARIANCE)[:, None] & (vb > CONSTANT_VARIANCE)[None, :]
        r = cov / var.clamp_min(1e-300).sqrt()
        return torch.where(ok, r.clamp(-1, 1), torch.nan)

    def result(self) -> Tensor:
        """:meth:`pearson` of every pair, on the CPU."""
        return self.pearson().cpu()
