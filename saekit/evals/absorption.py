"""Feature absorption (Chanin et al. 2024; SAEBench's ``absorption``): where a concept's
main feature stays silent, does a more specific feature carry the concept instead?

On the planted concepts of :mod:`saekit.evals.sparse_probing` (the demo LM's families,
whose groups — weekday and weekend, warm and cold colours — are the more specific
features that can absorb them):

1. A dense probe per concept gives its direction ``p`` (the probe's weights in the
   activation space, unit norm).
2. The concept's **main features**: the ``n_main`` features with the largest difference
   of mean code between the concept's tokens and the others' (training split).
3. On the concept's test tokens where no main feature fires (**false negatives**),
   a token is **absorbed** when some active feature has a decoder row with cosine at
   least ``min_cosine`` to ``p`` and adds at least ``min_share`` of the token's
   projection on ``p`` (``c_l W_dec,l · p ≥ min_share · (x − b_dec) · p``).

Reported per dictionary and concept: the false-negative rate, the absorption rate
(absorbed tokens over the concept's test tokens) and the absorbing features; the summary
holds their means over concepts.

Departures from SAEBench, and why: SAEBench's task is the first letter of single-token
words, with probes trained on a letter's words and ablations to confirm causality; the
demo LM's planted families give the same structure (a general concept, specific members)
on single tokens, and saekit measures absorption at the probed hook without the causal
check, which needs the full model per token. A transcoder's decoder rows live at its
output hook: its probe directions and the tokens' projections are taken there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saekit.evals.common import EvalResult, settings
from saekit.evals.sparse_probing import (
    ConceptProbes,
    Prepared,
    fit_probe,
    prepare,
    top_mean_difference,
)


@dataclass
class Config(ConceptProbes):
    """Absorption settings: those of the concept probes, and what counts as absorbed."""

    n_main: int = 1
    """Main features per concept."""
    min_cosine: float = 0.1
    """Smallest cosine between an absorbing feature's decoder row and the probe direction."""
    min_share: float = 0.4
    """Smallest share of the token's projection on the probe direction it must add."""


def absorbed_tokens(x: Tensor, codes: Tensor, active: Tensor, directions: Tensor, main: Tensor, p: Tensor,
                    min_cosine: float, min_share: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(missed [n], absorbed [n], absorbing [n, d_dict])`` for a concept's tokens.

    ``x`` are the tokens' activations minus the decoder bias, ``codes`` their codes
    scaled by the decoder rows' norms, ``active`` which features fire, ``directions``
    the unit decoder rows, ``main`` the main features' indices and ``p`` the unit probe
    direction. A token is missed when no main feature fires; a firing feature absorbs it
    when its direction has cosine ≥ ``min_cosine`` with ``p`` and it adds ≥ ``min_share``
    of ``x · p``; a missed token with an absorbing feature is absorbed."""
    missed = ~active[:, main].any(1)
    cos = directions @ p
    along = codes * cos  # each feature's contribution along p
    total = x @ p
    absorbing = active & (cos >= min_cosine) & (along >= min_share * total[:, None].clamp_min(1e-6))
    return missed, missed & absorbing.any(1), absorbing


def run(cfg: Config, model: Any = None, progress: bool = False, prepared: Prepared | None = None) -> EvalResult:
    """Absorption of each dictionary on each concept (module docstring); ``prepared``
    (:func:`~saekit.evals.sparse_probing.prepare`) reuses another evaluator's harvest and codes.

    Returns
    -------
    EvalResult named ``absorption``: one row per (dictionary, concept) with
    ``false_negative_rate``, ``absorption_rate``, ``n_test``, ``main_features`` and the
    ``absorbing_features`` seen (most frequent first); the summary holds
    ``NAME/absorption`` and ``NAME/false_negatives`` (means over concepts).
    """
    if cfg.n_main < 1 or not 0 <= cfg.min_cosine <= 1 or not 0 < cfg.min_share <= 1:
        raise ValueError(f"Config: n_main must be >= 1, min_cosine in [0, 1] and min_share in (0, 1]; got "
                         f"{cfg.n_main}, {cfg.min_cosine}, {cfg.min_share}")
    if not cfg.dictionaries:
        raise ValueError("Config.dictionaries must name at least one dictionary")
    prepared = prepared or prepare(cfg, model, progress)
    _, dicts, _, codes, names, splits, skipped, _ = prepared
    by_space: dict[int, list[Tensor]] = {}  # each concept's probe direction (unit) per activation space

    def directions_in(acts: Tensor) -> list[Tensor]:
        if id(acts) not in by_space:
            by_space[id(acts)] = []
            for _, train, y, _, _ in splits:
                _, std, w = fit_probe(acts[train], y, cfg.l2)
                by_space[id(acts)].append(torch.nn.functional.normalize((w[:-1] / std).float(), dim=0))
        return by_space[id(acts)]

    rows: list[dict[str, Any]] = []
    for name, d in dicts:
        acts = prepared.at_output(d)  # a transcoder's decoder rows live at its output hook
        directions = directions_in(acts)
        w_dec = d.W_dec.detach().float().cpu()
        unit, scale = torch.nn.functional.normalize(w_dec, dim=1), w_dec.norm(dim=1)
        centre, z_all = d.b_dec.detach().float().cpu(), codes[name]
        for (c, train, y, test, y_test), p in zip(splits, directions, strict=True):
            main = top_mean_difference(z_all[train], y, cfg.n_main)
            pos = test[y_test]
            z = z_all[pos]
            active = d.active(z.to(d.W_dec.device)).cpu()
            missed, absorbed, absorbing = absorbed_tokens(acts[pos] - centre, z * scale, active, unit, main, p,
                                                          cfg.min_cosine, cfg.min_share)
            counts = absorbing[absorbed].sum(0)
            top = [int(i) for i in counts.argsort(descending=True)[:5] if counts[i] > 0]
            rows.append({"dictionary": name, "concept": names[c], "n_test": len(pos),
                         "false_negative_rate": missed.double().mean().item(),
                         "absorption_rate": absorbed.double().mean().item(),
                         "main_features": main.tolist(), "absorbing_features": top})
    summary: dict[str, Any] = {"concepts": len(splits), "skipped": skipped}
    for name, _ in dicts:
        mine = [r for r in rows if r["dictionary"] == name]
        summary[f"{name}/absorption"] = sum(r["absorption_rate"] for r in mine) / len(mine)
        summary[f"{name}/false_negatives"] = sum(r["false_negative_rate"] for r in mine) / len(mine)
    return EvalResult("absorption", rows, summary, settings(cfg))
