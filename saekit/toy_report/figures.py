"""The toy report's plots (:func:`figures`): PNG bytes by file name, drawn with
matplotlib's object API (no pyplot, no global backend state)."""

from __future__ import annotations

import math
from typing import Any

import torch

from saekit.ground_truth import MATCH
from saekit.report import figure_png
from saekit.superposition import REGIMES, feature_norms, interference

_REGIME_COLOURS = ("#bbbbbb", "#4c72b0", "#dd8452", "#c44e52")


def figures(sweep: Any, sens: Any, phase: Any, geo: Any, bench: list[dict[str, Any]]) -> dict[str, bytes]:
    """The report's plots as PNG bytes, by file name."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global backend state
    from matplotlib.patches import Patch

    figs: dict[str, bytes] = {}
    density = (1 - sweep.sparsity).tolist()
    n_features, m = sweep.models.W.shape[-1], sweep.models.W.shape[-2]

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    ax.plot(density, sweep.n_represented.tolist(), "o-", label="represented (‖W_i‖ > 0.5)")
    ax.plot(density, sweep.n_superposed.tolist(), "s-", label="in superposition (interference > 0.1)")
    ax.plot(density, (1 / sweep.dims_per_feature).mul(m).tolist(), ":", color="k", label="‖W‖_F² (= m / D*)")
    ax.axhline(m, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel="feature density 1 − S", ylabel="features",
           title=f"{n_features} features in {m} dimensions")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    figs["sparsity.png"] = figure_png(fig)

    norms, inter = feature_norms(sweep.models.W), interference(sweep.models.W).clamp(0, 1)
    k = len(norms)
    fig = Figure(figsize=(2.1 * k, 3.6))
    axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for i, ax in enumerate(axes):
        ax.barh(range(n_features), norms[i].tolist(), color=[cmap(float(v)) for v in inter[i]])
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1.3), title=f"1−S = {density[i]:.3g}", xlabel="‖W_i‖")
    axes[0].set(ylabel="feature i (importance decreasing)", yticks=list(range(0, n_features, 5)))
    axes[0].invert_yaxis()
    fig.suptitle("‖W_i‖, coloured by interference Σ_{j≠i}(Ŵ_i·W_j)² (dark 0, yellow ≥ 1)", fontsize=9, y=1.04)
    figs["norms.png"] = figure_png(fig)

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    ax.plot(density, sens.jacobian_norm.tolist(), "o-", label="Jacobian spectral norm (mean)")
    ax.plot(density, sens.attack_gain.tolist(), "s--", label=f"explicit attack ‖Δx′‖/ε, ε = {sens.epsilon:g}")
    ax.plot(density, sens.global_bound.tolist(), "^-", label="over all inputs ‖WᵀW‖₂")
    ax.plot(density, (1 / sweep.dims_per_feature).tolist(), ":", color="k", label="features per dimension 1/D*")
    ax.set(xscale="log", xlabel="feature density 1 − S", ylabel="worst-case output change per unit input",
           title="Adversarial sensitivity")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    figs["adversarial.png"] = figure_png(fig)

    fig = Figure(figsize=(6, 4.6))
    ax = fig.subplots()
    lr, lp = phase.relative_importance.log10(), phase.density.log10()
    ax.pcolormesh(_edges(lr).tolist(), _edges(lp).tolist(), phase.regime.numpy(),
                  cmap=ListedColormap(list(_REGIME_COLOURS)), vmin=-0.5, vmax=3.5)
    ax.set(xlabel="log10 relative importance of the extra feature", ylabel="log10 feature density 1 − S",
           title="Two features, one dimension")
    ax.legend(handles=[Patch(color=c, label=f"extra feature: {r}" if i < 2 else r)
                       for i, (c, r) in enumerate(zip(_REGIME_COLOURS, REGIMES, strict=True))],
              fontsize=7, loc="lower left")
    figs["phase_diagram.png"] = figure_png(fig)

    k = geo.W.shape[0]
    fig = Figure(figsize=(2.3 * k, 2.6))
    axes = fig.subplots(1, k, squeeze=False)[0]
    t = [2 * math.pi * i / 100 for i in range(101)]
    for i, ax in enumerate(axes):
        ax.plot([math.cos(a) for a in t], [math.sin(a) for a in t], color="#dddddd", lw=0.8)
        for j in range(geo.W.shape[-1]):
            x, y = geo.W[i, 0, j].item(), geo.W[i, 1, j].item()
            ax.plot([0, x], [0, y], "-o", color=f"C{j}", ms=3)
        ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", xticks=[], yticks=[],
               title=f"1−S = {1 - float(geo.sparsity[i]):.3g}")
    fig.suptitle(f"{geo.W.shape[-1]} features of equal importance in 2 dimensions (columns of W)", fontsize=9)
    figs["geometry.png"] = figure_png(fig)

    names = list(dict.fromkeys(r["data"] for r in bench))
    fig = Figure(figsize=(5.2 * len(names), 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        rows = [r for r in bench if r["data"] == name]
        pos = list(range(len(rows)))
        for off, key, colour in ((-0.27, "MMCS", "#4c72b0"), (0.0, "signed MMCS", "#55a868"),
                                 (0.27, f"matched >= {MATCH}", "#dd8452")):
            ax.bar([p + off for p in pos], [r[key] for r in rows], 0.27, label=key, color=colour)
        ax.set_xticks(pos, [f"{r['kind']}\n{r['d_dict']}" for r in rows])
        ax.set(ylim=(0, 1.05), title=name)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8, loc="lower left")
    figs["benchmark.png"] = figure_png(fig)
    return figs


def _edges(centres: Any) -> Any:
    """Cell edges around sorted 1-D centres (half-way between, mirrored at the ends)."""
    c = centres.double()
    if len(c) == 1:
        return torch.stack([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return torch.cat([c[:1] - (mid[:1] - c[:1]), mid, c[-1:] + (c[-1:] - mid[-1:])])


