"""Features across layers (Balcells, Lerner, Oesterle, Ucar & Heimersheim 2024,
arXiv 2410.08869; code ``Stefan-Heimersheim/spar-2024``, ``src/similarity_measures.py``):
how the features of one dictionary relate to those of another, by their activations on
the same tokens.

Two dictionaries ``A`` (``d_a`` features) and ``B`` (``d_b``) encode the same tokens:
on adjacent layers each encodes its own hook's activations (all hooks harvested in one
forward pass), or two dictionaries (an SAE and an SNMF) share one hook. With ``a_i(t)``,
``b_j(t)`` the codes and ``1[·]`` the dictionary's own :meth:`~saekit.Dictionary.active`
(for SAEs that is the paper's ``> 0``), over the tokens ``t``:

- **Pearson** ``ρ_ij`` of the codes ``a_i`` and ``b_j``;
- **Jaccard** ``|a_i on ∧ b_j on| / |a_i on ∨ b_j on|``;
- **sufficiency** ``P(b_j on | a_i on) = |a_i on ∧ b_j on| / |a_i on|`` (the paper's
  ``SufficiencyAggregator``: ``a_i`` firing suffices for ``b_j``);
- **necessity** ``P(a_i on | b_j on) = |a_i on ∧ b_j on| / |b_j on|`` (``a_i`` is needed
  for ``b_j``);
- **pass-through**: feature ``i`` of ``A`` passes through when its best match
  ``max_j ρ_ij ≥ 0.95`` (the paper's threshold; ``pass_through_threshold``). The
  backward fraction is the same for ``B``'s features against ``A``.

Each row of the table is one feature ``i`` of ``A`` with its best partner
``j* = argmax_j ρ_ij`` and the four measures of the pair ``(i, j*)``, plus the best
Jaccard over all ``j``.

Everything streams: per batch of windows the model runs once (up to the last hook),
each dictionary encodes its hook's activations, and :class:`CoActivation` adds the
batch's sums to float64 accumulators. Memory is ``O(d_a·d_b)`` (two float64 matrices:
16 bytes per pair, 9.7 GB for two 24,576-feature SAEs) plus one batch of codes; the
codes of all tokens are never held.

Deviations from the authors' code, and why:

- BOS (and padding, document separators) are excluded, as in every saekit statistic:
  the dictionaries are not trained on them and BOS activations are outliers that would
  dominate a correlation. The authors kept every position.
- Sums are float64 and the codes are shifted by the first batch's mean before the
  products (as :mod:`saekit.compare`'s paired correlation), so ``E[ab] − E[a]E[b]``
  does not cancel; the authors accumulated raw float32 sums.
- Firing is the dictionary's ``active`` (DESIGN.md), which for SAEs is the authors'
  ``> 0`` and for SNMF its top-k or relative threshold.
- A feature whose code never varies on the evaluated tokens (dead) has no correlation.
  The pass-through fractions are over the live features; the authors' NaN→0 counts
  dead features as not passing, i.e. their fraction is ours × (1 − ``frac_dead_a``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from saekit.activations.harvest import iter_harvest
from saekit.data import load_tokens
from saekit.evals.common import EvalConfig, EvalResult
from saekit.formats import load_dictionary
from saekit.metrics.streaming import Correlation
from saekit.metrics.uncertainty import mean_se
from saekit.models import (
    HookedModel,
    hook_layer,
    hook_width,
    load_model,
    model_device,
    model_processing,
    validate_hook,
)
from saekit.report import figure_png

#: Rows of the [d_a, d_b] matrices finalised at a time (bounds the temporary memory).
ROW_CHUNK = 1024


@dataclass
class Config(EvalConfig):
    """Features across layers. Defaults are the demo-LM settings
    (``eval/layers_demo.toml``: the shipped TopK SAE against the shipped SNMF on one
    hook); ``eval/layers_gpt2.toml`` has the paper's GPT-2 small settings."""

    dictionaries: list[str] | None = field(
        default_factory=lambda: ["checkpoints/demo-topk", "checkpoints/demo-snmf"])
    """Exactly two dictionaries (paths, registry ids): ``A`` (its features are the rows)
    and ``B``, e.g. layer L and L+1, or an SAE and an SNMF on one hook. Each encodes
    the activations of the hook recorded in its config."""
    hook: str | None = None
    """Not needed (each dictionary reads its recorded hook); when set, every dictionary
    must be fitted on it, a guard for same-hook comparisons."""
    n_tokens: int = 32768
    """Tokens the statistics run over (BOS, padding and separators excluded; the paper:
    10M)."""
    pass_through_threshold: float = 0.95
    """A feature passes through when its best Pearson correlation reaches this."""
    text_column: str = "text"
    """Text column of a dataset source."""


class CoActivation(Correlation):
    """Streaming statistics of two code matrices over the same tokens, in float64.

    Accumulates, for every pair ``(i, j)``, what Pearson correlation, Jaccard
    similarity, sufficiency and necessity need: ``Σa``, ``Σa²``, ``Σb``, ``Σb²``,
    ``Σ aᵀb`` (codes shifted by the first batch's mean, so the covariance does not
    cancel: :class:`saekit.metrics.Correlation`, which it extends) and the firing and
    co-firing counts. :mod:`saekit.compare` correlates a matching's pairs with the same
    :class:`~saekit.metrics.Correlation`, for matched columns only.

    Examples
    --------
    >>> stats = CoActivation(d_a, d_b)                           # doctest: +SKIP
    >>> for x_a, x_b in batches:
    ...     ca, cb = A.encode(x_a), B.encode(x_b)
    ...     stats.update(ca, cb, A.active(ca), B.active(cb))
    >>> stats.pearson()                                          # [d_a, d_b] float64
    """

    def __init__(self, d_a: int, d_b: int, device: Any = None):
        super().__init__(d_a, d_b, device=device or "cpu")
        dev = self.cross.device
        self.fires_a = torch.zeros(d_a, dtype=torch.int64, device=dev)
        self.fires_b = torch.zeros(d_b, dtype=torch.int64, device=dev)
        # float64 holds integer counts exactly up to 2^53 tokens
        self.cofires = torch.zeros(d_a, d_b, dtype=torch.float64, device=dev)

    def update(self, codes_a: Tensor, codes_b: Tensor, active_a: Tensor, active_b: Tensor) -> CoActivation:
        """Add a batch: codes ``[n, d_a]``, ``[n, d_b]`` and their firing masks, row t of
        each being the same token. Returns ``self``."""
        d_a, d_b = self.cross.shape
        if codes_a.ndim != 2 or codes_a.shape[1] != d_a or active_a.shape != codes_a.shape:
            raise ValueError(f"codes_a and active_a must be [n, {d_a}], got {tuple(codes_a.shape)} "
                             f"and {tuple(active_a.shape)}")
        if codes_b.ndim != 2 or codes_b.shape[1] != d_b or active_b.shape != codes_b.shape:
            raise ValueError(f"codes_b and active_b must be [n, {d_b}], got {tuple(codes_b.shape)} "
                             f"and {tuple(active_b.shape)}")
        if len(codes_a) != len(codes_b):
            raise ValueError(f"codes_a has {len(codes_a)} tokens, codes_b {len(codes_b)}: rows must pair up")
        if not len(codes_a):
            return self
        super().update(codes_a, codes_b)
        dev = self.cross.device
        fa, fb = active_a.to(dev), active_b.to(dev)
        self.fires_a += fa.sum(0)
        self.fires_b += fb.sum(0)
        # 0/1 products summed over < 2^24 tokens are exact in float32
        self.cofires += (fa.T.float() @ fb.float()).double()
        return self

    def jaccard(self, rows: slice = slice(None)) -> Tensor:
        """float64 ``[rows, d_b]``: co-firing over either firing; NaN where neither ever fires."""
        self._need_tokens()
        both = self.cofires[rows]
        either = self.fires_a[rows, None].double() + self.fires_b[None, :].double() - both
        return both / either.where(either > 0, torch.nan)

    def sufficiency(self, rows: slice = slice(None)) -> Tensor:
        """float64 ``[rows, d_b]``: ``P(b_j on | a_i on)``; NaN where ``a_i`` never fires."""
        self._need_tokens()
        fa = self.fires_a[rows, None].double()
        return self.cofires[rows] / fa.where(fa > 0, torch.nan)

    def necessity(self, rows: slice = slice(None)) -> Tensor:
        """float64 ``[rows, d_b]``: ``P(a_i on | b_j on)``; NaN where ``b_j`` never fires."""
        self._need_tokens()
        fb = self.fires_b[None, :].double()
        return self.cofires[rows] / fb.where(fb > 0, torch.nan)


class BestMatches(NamedTuple):
    """Each feature of ``A``'s best partner in ``B`` by Pearson correlation, and back."""

    partner: Tensor
    """int64 ``[d_a]``: ``argmax_j ρ_ij``; −1 where ``a_i`` has no correlation (dead)."""
    pearson: Tensor
    """float64 ``[d_a]``: ``ρ_{i, partner}``; NaN for dead features."""
    jaccard: Tensor
    """float64 ``[d_a]``: Jaccard similarity of ``(i, partner)``."""
    sufficiency: Tensor
    """float64 ``[d_a]``: ``P(b_partner on | a_i on)``."""
    necessity: Tensor
    """float64 ``[d_a]``: ``P(a_i on | b_partner on)``."""
    max_jaccard: Tensor
    """float64 ``[d_a]``: ``max_j`` Jaccard (its partner may differ from the Pearson one)."""
    backward_pearson: Tensor
    """float64 ``[d_b]``: ``max_i ρ_ij``, each feature of ``B``'s best match in ``A``."""


def best_matches(stats: CoActivation, row_chunk: int = ROW_CHUNK) -> BestMatches:
    """Best partners from the accumulated statistics, ``row_chunk`` rows of the
    ``[d_a, d_b]`` matrices at a time."""
    d_a, d_b = stats.cross.shape
    out = {k: torch.full((d_a,), torch.nan, dtype=torch.float64) for k in
           ("pearson", "jaccard", "sufficiency", "necessity", "max_jaccard")}
    partner = torch.full((d_a,), -1, dtype=torch.int64)
    backward = torch.full((d_b,), -math.inf, dtype=torch.float64, device=stats.cross.device)
    for lo in range(0, d_a, row_chunk):
        rows = slice(lo, min(lo + row_chunk, d_a))
        r = stats.pearson(rows)
        filled = r.nan_to_num(-math.inf)
        best, j = filled.max(dim=1)
        ok = best > -math.inf
        idx = j[:, None]
        partner[rows] = torch.where(ok, j, -1).cpu()
        jac = stats.jaccard(rows)
        for name, m in (("pearson", r), ("jaccard", jac), ("sufficiency", stats.sufficiency(rows)),
                        ("necessity", stats.necessity(rows))):
            out[name][rows] = torch.where(ok, m.gather(1, idx)[:, 0], torch.nan).cpu()
        mx = jac.nan_to_num(-math.inf).max(dim=1).values
        out["max_jaccard"][rows] = torch.where(mx > -math.inf, mx, torch.nan).cpu()
        backward = torch.maximum(backward, filled.max(dim=0).values)
    backward = torch.where(backward > -math.inf, backward, torch.nan).cpu()
    return BestMatches(partner, out["pearson"], out["jaccard"], out["sufficiency"], out["necessity"],
                       out["max_jaccard"], backward)


@torch.no_grad()
def co_activation(model: HookedModel, dict_a: Any, dict_b: Any, tokens: Tensor, batch_size: int = 16,
                  progress: bool = False, chunk_tokens: int | None = None) -> CoActivation:
    """Stream ``tokens [n_windows, ctx_len]`` through the model once (up to the last hook
    needed) and accumulate both dictionaries' code statistics on the same tokens.

    Activations of ``batch_size``-window forwards are gathered into chunks of at least
    ``chunk_tokens`` tokens before encoding (default ``2^24 / max(d_dict)``, between 256
    and 8192: at most 64 MB of float32 codes per dictionary), because SNMF's NNLS has a
    per-call cost that small batches would pay often. A chunk overshoots by less than
    one forward batch.
    """
    dev = model_device(model)
    hooks = list(dict.fromkeys([dict_a.cfg.hook, dict_b.cfg.hook]))  # one hook when both share it
    stats = CoActivation(dict_a.cfg.d_dict, dict_b.cfg.d_dict, device=dev)
    chunk = chunk_tokens or max(256, min(8192, 2**24 // max(dict_a.cfg.d_dict, dict_b.cfg.d_dict)))
    pending: dict[str, list[Tensor]] = {h: [] for h in hooks}

    def flush() -> None:
        x = {h: torch.cat(v) for h, v in pending.items()}
        for v in pending.values():
            v.clear()
        ca = dict_a.encode(x[dict_a.cfg.hook].to(dict_a.W_dec.device, dict_a.W_dec.dtype))
        # the same dictionary twice (a self-check) gives the same codes: encode once
        cb = ca if dict_b is dict_a else dict_b.encode(x[dict_b.cfg.hook].to(dict_b.W_dec.device,
                                                                               dict_b.W_dec.dtype))
        stats.update(ca, cb, dict_a.active(ca), dict_b.active(cb))

    for acts in iter_harvest(model, hooks, tokens, batch_size, progress=progress):
        for h in hooks:
            pending[h].append(acts[h])
        if sum(len(x) for x in pending[hooks[0]]) >= chunk:
            flush()
    if pending[hooks[0]]:
        flush()
    return stats


def _check_dictionaries(model: HookedModel, dicts: Sequence[Any], names: Sequence[str], hook: str | None) -> None:
    for d, name in zip(dicts, names, strict=True):
        h = d.cfg.hook
        if not h:
            raise ValueError(f"dictionary {name}: no recorded hook (cfg.hook), so its activations are unknown")
        validate_hook(model, h)
        if hook_width(model, h) != d.cfg.d_in:
            raise ValueError(f"dictionary {name}: d_in={d.cfg.d_in}, but hook {h!r} has width "
                             f"{hook_width(model, h)}")
        if hook is not None and h != hook:
            raise ValueError(f"dictionary {name} is fitted on {h!r}, but Config.hook is {hook!r}")
        want, have = d.cfg.processing, model_processing(model)
        if want and want != have:
            warnings.warn(f"dictionary {name} was fitted on {want!r}-processed activations, the model is "
                          f"{have!r}: its codes may be off", stacklevel=3)


def run(cfg: Config, model: Any = None, progress: bool = False,
        dictionaries: Sequence[Any] | None = None) -> EvalResult:
    """Match the features of two dictionaries by their codes on the same tokens.

    Parameters
    ----------
    cfg
        The settings; ``cfg.dictionaries`` names the two dictionaries unless
        ``dictionaries`` is given.
    model
        An already-loaded model (default: ``load_model(cfg.model)``).
    dictionaries
        Two already-loaded dictionaries ``(A, B)``, used instead of ``cfg.dictionaries``.

    Returns
    -------
    EvalResult named ``layers``: one row per feature of ``A`` (``firing_frequency``,
    ``partner``, ``pearson``, ``jaccard``, ``sufficiency``, ``necessity``,
    ``partner_firing_frequency``, ``max_jaccard``, ``passes_through``); summary with the
    pass-through fractions (forward and backward, over live features), the mean and
    median best correlation, dead fractions; plots in ``layers.png``.
    """
    if dictionaries is not None:
        dicts = list(dictionaries)
        names = [f"{'AB'[i] if i < 2 else i}: {d.cfg.kind} {d.cfg.d_dict} on {d.cfg.hook}" for i, d in enumerate(dicts)]
    else:
        if not cfg.dictionaries or len(cfg.dictionaries) != 2:
            raise ValueError(f"Config.dictionaries must name exactly two dictionaries (A, B), "
                             f"got {cfg.dictionaries!r}")
        names = [str(s) for s in cfg.dictionaries]
        dicts = []
    if len(names) != 2:
        raise ValueError(f"layers compares exactly two dictionaries, got {len(names)}")
    if not 0 < cfg.pass_through_threshold <= 1:
        raise ValueError(f"Config.pass_through_threshold must be in (0, 1], got {cfg.pass_through_threshold}")
    if model is None:
        model = load_model(cfg.model, device=cfg.device)
    dev = model_device(model)
    if not dicts:
        cache: dict[str, Any] = {}
        for s in names:  # a spec named twice loads once: the self-comparison encodes once
            cache.setdefault(s, load_dictionary(s))
        dicts = [cache[s] for s in names]
    dicts = [d.to(dev).eval() for d in dicts]
    _check_dictionaries(model, dicts, names, cfg.hook)

    tokens = load_tokens(cfg.data, model, n_tokens=cfg.n_tokens, ctx_len=cfg.ctx_len, seed=cfg.seed,
                         text_column=cfg.text_column)
    stats = co_activation(model, dicts[0], dicts[1], tokens, cfg.batch_size, progress)
    best = best_matches(stats)

    freq_a = (stats.fires_a.double() / stats.n_tokens).cpu()
    freq_b = (stats.fires_b.double() / stats.n_tokens).cpu()
    thr = cfg.pass_through_threshold
    rows = []
    for i in range(dicts[0].cfg.d_dict):
        j = int(best.partner[i])
        rows.append({"feature": i, "firing_frequency": float(freq_a[i]), "partner": j,
                     "pearson": float(best.pearson[i]), "jaccard": float(best.jaccard[i]),
                     "sufficiency": float(best.sufficiency[i]), "necessity": float(best.necessity[i]),
                     "partner_firing_frequency": float(freq_b[j]) if j >= 0 else math.nan,
                     "max_jaccard": float(best.max_jaccard[i]),
                     "passes_through": bool(best.pearson[i] >= thr)})

    live_a, live_b = (m.cpu() for m in stats.live())
    fwd, bwd = best.pearson[live_a], best.backward_pearson[live_b]
    mean = lambda x: float(x[~torch.isnan(x)].mean()) if (~torch.isnan(x)).any() else math.nan
    summary = {
        "pass_through_fraction": float((fwd >= thr).double().mean()) if len(fwd) else math.nan,
        "pass_through_fraction_backward": float((bwd >= thr).double().mean()) if len(bwd) else math.nan,
        "pass_through_threshold": thr,
        "mean_best_pearson": mean(fwd),
        "mean_best_pearson_se": mean_se(fwd),
        "pass_through_fraction_se": mean_se((fwd >= thr).double()),
        "median_best_pearson": float(fwd.median()) if len(fwd) else math.nan,
        "mean_best_pearson_backward": mean(bwd),
        "mean_best_pearson_backward_se": mean_se(bwd),
        "mean_jaccard_of_best": mean(best.jaccard[live_a]),
        "mean_sufficiency_of_best": mean(best.sufficiency[live_a]),
        "mean_necessity_of_best": mean(best.necessity[live_a]),
        "frac_dead_a": 1 - float(live_a.double().mean()),
        "frac_dead_b": 1 - float(live_b.double().mean()),
        "n_tokens": stats.n_tokens,
    }
    hooks = [d.cfg.hook for d in dicts]
    settings = asdict(cfg) | {"names": names, "hooks": hooks, "layers": [hook_layer(h) for h in hooks],
                              "d_dict": [d.cfg.d_dict for d in dicts], "kinds": [d.cfg.kind for d in dicts],
                              "n_windows": len(tokens)}
    return EvalResult("layers", rows, summary, settings,
                      {"layers.png": _figure(best, live_a, live_b, thr, names)})


def _figure(best: BestMatches, live_a: Tensor, live_b: Tensor, thr: float, names: Sequence[str]) -> bytes:
    from matplotlib.figure import Figure

    fwd = best.pearson[live_a].numpy()
    bwd = best.backward_pearson[live_b].numpy()
    fig = Figure(figsize=(13, 3.8))
    ax_hist, ax_pass, ax_sn = fig.subplots(1, 3)
    lowest = min([float(np.nanmin(x)) for x in (fwd, bwd) if len(x)] + [0.0])
    bins = np.linspace(max(-1.0, math.floor(lowest * 10) / 10), 1, 41)
    ax_hist.hist(fwd, bins=bins, alpha=0.6, label=f"A → B ({len(fwd)} live)")
    ax_hist.hist(bwd, bins=bins, alpha=0.6, label=f"B → A ({len(bwd)} live)")
    ax_hist.axvline(thr, color="k", ls=":", lw=0.8)
    ax_hist.set(xlabel="best Pearson correlation", ylabel="features", title="best match per feature")
    ax_hist.legend(fontsize="small")
    bounds = np.linspace(0, 1, 101)
    for x, label in ((fwd, "A → B (forward)"), (bwd, "B → A (backward)")):
        if len(x):
            ax_pass.plot(bounds, [(x >= b).mean() for b in bounds], label=label)
    ax_pass.axvline(thr, color="k", ls=":", lw=0.8)
    ax_pass.set(xlabel="pass-through bound on best Pearson", ylabel="fraction of live features",
                title="pass-through", ylim=(0, 1.02))
    ax_pass.legend(fontsize="small")
    ok = live_a.numpy() & ~np.isnan(best.sufficiency.numpy())
    sc = ax_sn.scatter(best.sufficiency.numpy()[ok], best.necessity.numpy()[ok], c=best.pearson.numpy()[ok],
                       s=6, cmap="viridis", vmin=-1, vmax=1)
    fig.colorbar(sc, ax=ax_sn, label="Pearson")
    ax_sn.set(xlabel="sufficiency P(B on | A on)", ylabel="necessity P(A on | B on)",
              title="best pair per feature of A", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    fig.suptitle(f"A = {names[0]}   B = {names[1]}", fontsize="small")
    fig.tight_layout()
    return figure_png(fig)


__all__ = ["BestMatches", "CoActivation", "Config", "best_matches", "co_activation", "run"]
