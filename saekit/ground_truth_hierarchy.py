"""Ground truth for feature absorption: hierarchical features, as in the Matryoshka toys.

:func:`hierarchical_sparse_data` draws activations from a known two-level hierarchy,
the toy of Nabeshima (2024, ``matryoshka-saes``' ``tree.json``) that Bussmann et al.
(2025) also use: ``n_parents`` parent features, each with ``n_children`` children that
fire only when their parent does and never together (mutually exclusive: given an
active parent, one child is chosen with probability ``p_child`` each, or none with
the rest), plus ``n_independent`` features with no hierarchy. Directions are
orthogonal when ``d_in`` allows (as in both toys), so any mixing of a parent into a
child latent is the dictionary's doing.

Departures from the published toys, and why: Nabeshima trains with an L1 penalty and
random prefix lengths; the Matryoshka dictionary here is saekit's
``matryoshka_batchtopk`` (Bussmann et al.'s fixed nested groups and BatchTopK), the
kind under test, against plain ``batchtopk`` at the same k. Magnitudes are binary, as
in Nabeshima's data (his 5% magnitude jitter is commented out there).

:func:`hierarchy_benchmark` fits BatchTopK, Matryoshka BatchTopK and a recursive SNMF
(:func:`saekit.hierarchy.fit_hierarchy`) on it and scores **absorption**
(:func:`absorption_scores`): a child latent that swallows its parent's direction, so
that the parent's latent stays silent where the child fires.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from saekit.ground_truth import (
    MAGNITUDES,
    MATCH,
    Magnitude,
    check_positive_int,
    draw_magnitudes,
    unit_directions,
)
from saekit.hierarchy import fit_hierarchy
from saekit.metrics import fvu, match, recovery, unit_rows
from saekit.training.api import fit

#: Dictionaries the hierarchy benchmark compares.
HIERARCHY_KINDS = ("batchtopk", "matryoshka_batchtopk", "snmf")
#: |cosine| at or above which a true feature counts as recovered (the ground-truth benchmark's).
MATCH_COS = MATCH


class HierarchicalData(NamedTuple):
    """Activations drawn from a known two-level feature hierarchy."""

    x: Tensor
    """``[n, d_in]`` activations, ``codes @ features`` plus Gaussian noise."""
    codes: Tensor
    """``[n, n_features]`` true non-negative codes (a child's code > 0 implies its parent's)."""
    features: Tensor
    """``[n_features, d_in]`` true unit-norm directions: the parents first, then each
    parent's children in turn, then the independent features."""
    parent: Tensor
    """int64 ``[n_features]``: index of each feature's parent, −1 for parents and
    independent features."""
    n_parents: int
    """Number of parent features (the first rows of ``features``)."""
    expected_l0: float
    """Mean number of active true features per row."""

    def pairs(self) -> list[tuple[int, int]]:
        """Every ``(parent, child)`` pair of feature indices."""
        return [(int(p), c) for c, p in enumerate(self.parent.tolist()) if p >= 0]


def hierarchical_sparse_data(n: int, n_parents: int = 3, n_children: int = 3, n_independent: int = 8, *,
                             p_parent: float = 0.15, p_child: float = 0.2, p_independent: float = 0.05,
                             d_in: int | None = None, magnitude: Magnitude = "constant", noise: float = 0.0,
                             seed: int = 0) -> HierarchicalData:
    """Parents, their mutually exclusive children, and independent features.

    Defaults are Nabeshima's toy: three parents at p = 0.15, each with three children
    at p = 0.2 given the parent (none of them 40% of the time), eight independent
    features at p = 0.05, binary magnitudes (``"constant"``), orthogonal directions in
    as many dimensions as features. A child's magnitude is drawn independently of its
    parent's (with ``"constant"`` both are 1).

    Parameters
    ----------
    n
        Number of tokens.
    n_parents, n_children, n_independent
        Sizes of the hierarchy: ``n_features = n_parents * (1 + n_children) + n_independent``.
    p_parent, p_child, p_independent
        Firing probabilities: a parent's; a child's given its parent (``n_children *
        p_child`` ≤ 1); an independent feature's.
    d_in
        Activation dimension (default ``n_features``). Directions are orthogonal when
        ``d_in ≥ n_features``, otherwise random unit vectors (in superposition).
    magnitude, noise, seed
        As :func:`saekit.ground_truth.synthetic_sparse_data`.
    """
    for value, name in ((n, "n"), (n_parents, "n_parents"), (n_children, "n_children")):
        check_positive_int(value, name)
    if isinstance(n_independent, bool) or not isinstance(n_independent, int) or n_independent < 0:
        raise ValueError(f"n_independent must be an int >= 0, got {n_independent!r}")
    for value, name in ((p_parent, "p_parent"), (p_child, "p_child"), (p_independent, "p_independent")):
        if not 0.0 <= value <= 1.0:  # also rejects nan
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if n_children * p_child > 1 + 1e-12:
        raise ValueError(f"children are mutually exclusive: n_children * p_child must be <= 1, "
                         f"got {n_children} * {p_child}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0, got {noise}")
    if magnitude not in MAGNITUDES:
        raise ValueError(f"magnitude must be one of {MAGNITUDES}, got {magnitude!r}")
    n_features = n_parents * (1 + n_children) + n_independent
    d_in = n_features if d_in is None else d_in
    check_positive_int(d_in, "d_in")
    g = torch.Generator().manual_seed(seed)
    if d_in >= n_features:
        q, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))
        features = q[:, :n_features].T.contiguous()
    else:
        features = unit_directions(n_features, d_in, g)
    on_parent = torch.rand(n, n_parents, generator=g, dtype=torch.float64) < p_parent
    # One uniform draw per parent picks its child: child j where u falls in [j p, (j+1) p).
    u = torch.rand(n, n_parents, generator=g, dtype=torch.float64)
    which = torch.floor(u / p_child).long() if p_child > 0 else torch.full_like(u, n_children).long()
    on_child = (which.unsqueeze(-1) == torch.arange(n_children)) & on_parent.unsqueeze(-1)
    on_indep = torch.rand(n, n_independent, generator=g, dtype=torch.float64) < p_independent
    fires = torch.cat([on_parent, on_child.reshape(n, -1), on_indep], 1)
    codes = fires * draw_magnitudes(magnitude, (n, n_features), g)
    x = codes @ features
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    parent = torch.full((n_features,), -1, dtype=torch.long)
    parent[n_parents:n_parents * (1 + n_children)] = torch.arange(n_parents).repeat_interleave(n_children)
    expected_l0 = n_parents * p_parent * (1 + n_children * p_child) + n_independent * p_independent
    return HierarchicalData(x.float(), codes.float(), features.float(), parent, n_parents, expected_l0)


class Absorption(NamedTuple):
    """Absorption of parents by children in one dictionary (means over parent/child pairs)."""

    absorption: float
    """Over the tokens where a child is active (so its parent too): the fraction where the
    parent's latent is silent while the child's latent fires."""
    parent_missed: float
    """Over the same tokens: the fraction where the parent's latent is silent."""
    child_parent_cos: float
    """Signed cosine of the child latent's decoder row with the parent's direction: 0
    for a pure child (the directions are orthogonal), 1/√2 for a child latent that is
    parent + child (mean over the pairs whose child has a latent)."""
    per_pair: list[dict[str, Any]]
    """One record per pair: ``parent``, ``child``, ``parent latent``, ``child latent``,
    ``tokens``, ``absorption``, ``parent missed``, ``child-parent cos``."""


def matched_latents(W_dec: Tensor, features: Tensor) -> Tensor:
    """int64 ``[n_features]``: each true feature's latent under the one-to-one matching
    of decoder rows to true directions (:func:`saekit.metrics.match`; −1 where the
    dictionary has fewer latents than there are features)."""
    m = match(features, W_dec.detach())
    out = torch.full((len(features),), -1, dtype=torch.long)
    out[m.rows] = m.cols
    return out


def absorption_scores(W_dec: Tensor, active: Tensor, data: HierarchicalData) -> Absorption:
    """Score parent absorption from a dictionary's decoder rows and firing on ``data``.

    Each true feature gets its latent by one-to-one matching of decoder rows to true
    directions (:func:`matched_latents`); an absorbing child latent (direction parent +
    child) still matches the child best, and the parent keeps its own latent, which
    fires on the parent-only tokens.

    Parameters
    ----------
    W_dec
        ``[d_dict, d_in]`` decoder rows.
    active
        bool ``[n, d_dict]``: which latents fire on each row of ``data.x``.
    data
        The hierarchy the dictionary was fitted on (its rows, codes and directions).
    """
    if W_dec.ndim != 2 or W_dec.shape[1] != data.features.shape[1]:
        raise ValueError(f"W_dec must be [d_dict, d_in = {data.features.shape[1]}], got {tuple(W_dec.shape)}")
    if active.shape != (len(data.codes), len(W_dec)) or active.dtype != torch.bool:
        raise ValueError(f"active must be a bool [n, d_dict] = [{len(data.codes)}, {len(W_dec)}] tensor (which "
                         f"latents fire on each row of data), got {active.dtype} {tuple(active.shape)}")
    latent = matched_latents(W_dec, data.features)
    dirs = unit_rows(W_dec.detach().double())
    rows = []
    for p, c in data.pairs():
        lp, lc = int(latent[p]), int(latent[c])
        on = data.codes[:, c] > 0
        tokens = int(on.sum())
        fires_p = active[on, lp] if lp >= 0 else torch.zeros(tokens, dtype=torch.bool)
        fires_c = active[on, lc] if lc >= 0 else torch.zeros(tokens, dtype=torch.bool)
        denom = max(tokens, 1)
        cos = float(dirs[lc] @ data.features[p].double()) if lc >= 0 else None
        rows.append({"parent": p, "child": c, "parent latent": lp, "child latent": lc, "tokens": tokens,
                     "absorption": float((~fires_p & fires_c).sum()) / denom,
                     "parent missed": float((~fires_p).sum()) / denom, "child-parent cos": cos})

    def mean(key: str) -> float:
        values = [r[key] for r in rows if r[key] is not None]  # a child without a latent has no cosine
        return sum(values) / len(values) if values else float("nan")

    return Absorption(mean("absorption"), mean("parent missed"), mean("child-parent cos"), rows)


def split_rows(data: HierarchicalData, n_train: int) -> tuple[HierarchicalData, HierarchicalData]:
    """``(first n_train rows, the rest)``, each with the same directions and hierarchy."""
    if not 0 < n_train < len(data.x):
        raise ValueError(f"n_train must be in (0, {len(data.x)}), got {n_train}")
    return (data._replace(x=data.x[:n_train], codes=data.codes[:n_train]),
            data._replace(x=data.x[n_train:], codes=data.codes[n_train:]))


def _snmf_hierarchy(train: HierarchicalData, test: HierarchicalData, seed: int) -> tuple[Any, dict[str, Any]]:
    """Fit the recursive SNMF and score its tree: ``(its finest level, tree scores)``."""
    n_features, d_in = train.features.shape
    n_top = int((train.parent < 0).sum())
    ranks = [min(n_features, d_in), min(n_top, min(n_features, d_in) - 1)]
    H = fit_hierarchy(train.x, ranks, seed=seed, wta_fraction=1.0)
    parents = test.features[:test.n_parents]
    coarse = recovery(H.levels[1].W_dec, parents, threshold=MATCH_COS)
    latent = matched_latents(H.levels[0].W_dec, test.features)
    pairs = test.pairs()
    under = [int(latent[c]) in H.children(1, int(coarse.matched[p])) for p, c in pairs]
    return H.levels[0], {"level-2 parent MMCS": coarse.mmcs, "children under parent": sum(under) / len(pairs),
                         "settings": f"ranks={ranks}, wta_fraction=1.0"}


def hierarchy_benchmark(train: HierarchicalData, test: HierarchicalData, kinds: Sequence[str] = HIERARCHY_KINDS,
                        *, epochs: int = 10, batch_size: int = 512, lr: float = 4e-3,
                        seeds: Sequence[int] = (0,)) -> list[dict[str, Any]]:
    """Fit each kind on ``train`` once per seed and score absorption on ``test``.

    SAE kinds (``batchtopk``, ``matryoshka_batchtopk``, any other SAE kind) get
    ``d_dict`` = the number of true features and ``k`` = round(expected L0), trained
    ``epochs`` passes at ``lr`` with batches of ``batch_size``; everything else is
    saekit's default, including Matryoshka's ``group_sizes``
    (:func:`saekit.dictionaries.matryoshka.default_group_sizes`: prefixes that double,
    none under ``max(2k, 8)`` latents).

    ``snmf`` is the recursive SNMF of :func:`saekit.hierarchy.fit_hierarchy` with ranks
    ``[n_features, n_parents + n_independent]`` (capped by ``d_in``): level 1 (the
    finest) has one feature per true feature, level 2 one per top-level feature (the
    parents and the independent features), given from the ground truth so that the
    tree has room for exactly the planted parents. ``wta_fraction`` 1.0 (plain semi-NMF)
    because the true directions are dense over the dimensions, as in
    :func:`saekit.ground_truth.dictionary_settings`; and no ``k``: a top-k of 1 (the
    rounded L0 of the default toy) would silence the parent on every parent + child
    token whatever the dictionary, so a level-1 feature fires where its code exceeds
    ``firing_threshold`` of the token's largest (the SNMF default). Its level-1
    dictionary is scored like an SAE (absorption, MMCS), and its tree by two more
    numbers: ``level-2 parent MMCS`` (do level-2 features recover the parent
    directions: best |cos| per parent) and ``children under parent`` (the fraction of
    pairs whose child's level-1 feature sits under the level-2 feature that matches
    the parent, by the tree's edges). Pure level-1 children show as a child-parent
    cosine near 0.

    Returns
    -------
    One row per (kind, seed): ``absorption``, ``parent missed`` and ``child-parent cos``
    (:func:`absorption_scores`, means over pairs), ``MMCS`` and ``matched >= 0.9`` over
    all true features, ``parents MMCS`` (over the parents only), ``FVU``, ``L0``,
    ``dead`` on the held-out rows, the two tree scores (None for SAEs), the settings and
    the fit time.
    """
    n_features = len(train.features)
    k = max(1, round(train.expected_l0))
    rows = []
    for kind in kinds:
        for seed in seeds:
            t0 = time.time()
            tree: dict[str, Any] = {"level-2 parent MMCS": None, "children under parent": None}
            if kind == "snmf":
                d, tree = _snmf_hierarchy(train, test, seed)
                settings = tree.pop("settings")
            else:
                d = fit(train.x, kind, d_dict=n_features, k=k, seed=seed, epochs=epochs, batch_size=batch_size,
                        lr=lr)
                groups = d.cfg.options.get("group_sizes")
                settings = f"k={k}" + (f", group_sizes={groups}" if groups else "")
            seconds = time.time() - t0
            with torch.no_grad():
                codes = d.encode(test.x)
                active = d.active(codes)
                x_hat = d.decode(codes)
            scores = absorption_scores(d.W_dec, active, test)
            rec = recovery(d.W_dec.detach(), test.features, threshold=MATCH_COS)
            rows.append({"kind": kind, "seed": seed, "d_dict": d.cfg.d_dict, "settings": settings,
                         "absorption": scores.absorption, "parent missed": scores.parent_missed,
                         "child-parent cos": scores.child_parent_cos, "MMCS": rec.mmcs,
                         f"matched >= {MATCH_COS}": rec.frac_recovered,
                         "parents MMCS": float(rec.max_cos[:test.n_parents].mean()),
                         **tree, "FVU": fvu(test.x, x_hat), "L0": float(active.sum(1).float().mean()),
                         "dead": float((~active.any(0)).float().mean()), "seconds": round(seconds, 2)})
    return rows


def mean_over_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per kind: the mean of each number over its seeds (``seeds``: how many)."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        row: dict[str, Any] = {"kind": kind, "seeds": len(mine)}
        for key, v in mine[0].items():
            if key in ("kind", "seed", "seconds") or isinstance(v, str):
                continue
            row[key] = v if v is None or isinstance(v, int) else sum(r[key] for r in mine) / len(mine)
        out.append(row)
    return out
