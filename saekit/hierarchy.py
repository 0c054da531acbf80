"""Recursive SNMF: features of features, with ranks shrinking level by level.

After Shafran, Geiger & Geva (§1.10 of snmf_anchors.md): level 1 is an SNMF of the
activations, ``A ≈ G₁ W₁``; level ℓ treats the ``r_{ℓ−1}`` features of level ℓ−1 as
samples and factorises them in turn, ``W_{ℓ−1} ≈ G_ℓ W_ℓ`` with ``G_ℓ ≥ 0`` of shape
``[r_{ℓ−1}, r_ℓ]``. ``G_ℓ[i, j]`` says how much child ``i`` uses parent ``j``; the tree
links ``i`` under ``j`` when ``G_ℓ[i, j] ≥ 0.15 · max_i G_ℓ[i, j]``, keeping the four
strongest children (the official thresholds). Two features reuse neurons when their
winner-take-all supports overlap: ``overlap[i, j] = |supp w_i ∩ supp w_j|``.

Deviations, on purpose: each level's samples are the unit-norm feature directions
(the official code factorises the scaled ones, so a level-2 fit is dominated by
whichever level-1 features happened to carry large norms); and the joint Adam
fine-tuning of all levels is left out, because it drops both the non-negativity
and the winner-take-all constraints that make the levels interpretable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from saekit.dictionaries.snmf import SNMF
from saekit.training.snmf import fit_snmf


class Hierarchy(NamedTuple):
    """A recursive SNMF."""

    levels: list[SNMF]
    """The dictionary of each level, finest first: ``levels[0]`` factorises the activations."""
    links: list[Tensor]
    """``links[ℓ - 1]`` is ``G_ℓ [r_{ℓ−1}, r_ℓ]``: non-negative weights of level ℓ−1's
    features (rows) on level ℓ's (columns), for ℓ = 1, 2, ..."""
    edges: list[tuple[int, int, int, float]]
    """Tree edges ``(level, child, parent, weight)``: feature ``child`` of ``levels[level]``
    sits under feature ``parent`` of ``levels[level + 1]``."""

    def children(self, level: int, parent: int) -> list[int]:
        """Features of ``levels[level - 1]`` under feature ``parent`` of ``levels[level]``."""
        return [c for lv, c, p, _ in self.edges if lv == level - 1 and p == parent]

    def leaves(self, level: int, feature: int) -> list[int]:
        """The level-0 features below ``feature`` of ``levels[level]``."""
        nodes = [feature]
        for lv in range(level, 0, -1):
            nodes = [c for p in nodes for c in self.children(lv, p)]
        return sorted(set(nodes))


def neuron_overlap(dictionary: Any) -> Tensor:
    """``[d_dict, d_dict]`` count of neurons two features' ``W_dec`` rows both use."""
    support = (dictionary.W_dec != 0).float()
    return (support @ support.T).round().long()


def tree_edges(link: Tensor, level: int, rel: float = 0.15, max_children: int = 4) -> list[tuple[int, int, int, float]]:
    """Children of each parent column of ``link`` at ≥ ``rel`` of the column's maximum,
    at most ``max_children`` of them, strongest first."""
    edges = []
    for j in range(link.shape[1]):
        col = link[:, j]
        top = col.max()
        if top <= 0:
            continue
        vals, idx = col.topk(min(max_children, len(col)))
        edges += [(level, int(i), j, float(v)) for v, i in zip(vals, idx, strict=True) if v >= rel * top]
    return edges


def fit_hierarchy(data: Any, ranks: list[int], *, hook: str | None = None, model: Any = None,
                  seed: int = 0, rel: float = 0.15, max_children: int = 4, **options: Any) -> Hierarchy:
    """Fit an SNMF with ``ranks[0]`` features on ``data``, then one with ``ranks[ℓ]`` on
    the features of level ℓ−1, for each further rank (each smaller than the last).

    ``options`` go to every level's ``fit_snmf`` (``wta_fraction``, ``solver``, ...).
    """
    if not ranks or any(b >= a for a, b in zip(ranks, ranks[1:], strict=False)):
        raise ValueError(f"ranks must be a non-empty, strictly decreasing list, got {ranks}")
    levels = [fit_snmf(data, ranks[0], hook=hook, model=model, seed=seed, **options)]
    links, edges = [], []
    for lv, r in enumerate(ranks[1:], start=1):
        samples = levels[-1].W_dec
        alive = samples.norm(dim=1) > 0
        d = fit_snmf(samples[alive], r, hook=hook, model=model, seed=seed + lv, **options)
        link = torch.zeros(len(samples), r)
        link[alive] = d.encode(samples[alive]).cpu()
        levels.append(d)
        links.append(link)
        edges += tree_edges(link, lv - 1, rel, max_children)
    return Hierarchy(levels, links, edges)
