"""Targeted probe perturbation (SAEBench's ``tpp``): ablating the features tied to one
concept should break that concept's probe and leave the others alone.

On the planted concepts and splits of :mod:`saekit.evals.sparse_probing`:

1. A dense probe per concept (one-vs-rest logistic regression on the activations at
   ``hook``), trained on its training split.
2. For each dictionary and concept ``i``, each feature's effect on probe ``i``: its mean
   code on concept ``i``'s positive training tokens times the probe's weight along its
   decoder row, ``mean(c_l) · (W_dec,l · w_i)`` (SAEBench's attribution). The ``n``
   features of largest effect are concept ``i``'s features (``n`` from ``n_features``).
3. Ablation: those features' part of the reconstruction is removed from the activations,
   ``x − Σ_{l∈S} c_l W_dec,l`` (the rest, and the reconstruction error, stay), and every
   probe is tested again on its own test split.
4. ``TPP(n) = mean_i [drop_i,i − mean_{j≠i} drop_j,i]``, drop being the loss of test
   accuracy: high when a dictionary's features for a concept are that concept's alone.

The same ablation with ``n`` random features of the dictionary is the control
(``random`` rows), as the planted truth is known here. A transcoder reads its codes at
``hook`` and writes at its output hook: its probes are trained, and its features
ablated, on the output hook's activations.

Departures from SAEBench, and why: SAEBench probes mean-pooled texts of labelled
datasets (not downloadable here) and ablates inside the model's forward pass before
pooling; saekit ablates at the probed hook on single tokens of the planted concepts, so
no forward pass is needed and the measured effect is the dictionary's alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from saekit.evals.common import EvalResult, settings
from saekit.evals.sparse_probing import (
    ConceptProbes,
    Prepared,
    fit_probe,
    predict,
    prepare,
)


@dataclass
class Config(ConceptProbes):
    """TPP settings: those of sparse probing (concepts, splits, probes) and the numbers of
    features ablated per concept."""

    n_features: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    """Numbers of a concept's features ablated together."""


def run(cfg: Config, model: Any = None, progress: bool = False, prepared: Prepared | None = None) -> EvalResult:
    """TPP of each dictionary (module docstring); ``prepared``
    (:func:`~saekit.evals.sparse_probing.prepare`) reuses another evaluator's harvest and codes.

    Returns
    -------
    EvalResult named ``tpp``: one row per (dictionary or its random control, concept, n)
    with ``intended_drop`` (the concept's own probe), ``unintended_drop`` (mean over the
    other probes) and their difference ``tpp``; the summary holds ``NAME@n`` (mean over
    concepts) and ``NAME/random@n``.
    """
    if not cfg.n_features or any(n < 1 for n in cfg.n_features):
        raise ValueError(f"Config.n_features must be positive integers, got {cfg.n_features!r}")
    if not cfg.dictionaries:
        raise ValueError("Config.dictionaries must name at least one dictionary")
    prepared = prepared or prepare(cfg, model, progress)
    _, dicts, _, codes, names, splits, skipped, _ = prepared
    if len(splits) < 2:
        raise ValueError(f"TPP needs two concepts with {cfg.min_per_class} labelled positions each in "
                         f"{cfg.n_tokens} tokens of {cfg.data!r}; found {len(splits)}")
    by_space: dict[int, tuple[Tensor, list, list[float]]] = {}  # probes per activation space, fitted once

    def probes_on(acts: Tensor) -> tuple[Tensor, list, list[float]]:
        if id(acts) not in by_space:
            probes = [fit_probe(acts[train], y, cfg.l2) for _, train, y, _, _ in splits]
            clean = [(predict(acts[s[3]], probes[j]) == s[4]).double().mean().item() for j, s in enumerate(splits)]
            by_space[id(acts)] = (acts, probes, clean)
        return by_space[id(acts)]

    g = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, Any]] = []
    clean_first: list[float] = probes_on(prepared.acts)[2]
    for name, d in dicts:
        # A transcoder's features are ablated (and probed) where it writes: its output hook.
        acts, probes, clean = probes_on(prepared.at_output(d))

        def accuracy(j: int, x: Tensor, probes: list = probes) -> float:
            return (predict(x, probes[j]) == splits[j][4]).double().mean().item()

        w_dec, z = d.W_dec.detach().float().cpu(), codes[name]
        for i, (c, train, y, _, _) in enumerate(splits):
            pos = z[train[y]].mean(0)
            _, std, w = probes[i]
            effect = pos * (w_dec.double() @ (w[:-1] / std)).float()
            order = effect.argsort(descending=True)
            for n in cfg.n_features:
                for control, chosen in (("", order[:n]), ("/random", torch.randperm(len(effect), generator=g)[:n])):
                    drops = [clean[j] - accuracy(j, acts[s[3]] - z[s[3]][:, chosen] @ w_dec[chosen])
                             for j, s in enumerate(splits)]
                    others = [x for j, x in enumerate(drops) if j != i]
                    rows.append({"dictionary": name + control, "concept": names[c], "n": n,
                                 "intended_drop": drops[i], "unintended_drop": sum(others) / len(others),
                                 "tpp": drops[i] - sum(others) / len(others)})
    summary: dict[str, Any] = {"concepts": len(splits), "skipped": skipped,
                               "clean_accuracy": sum(clean_first) / len(clean_first)}
    for key in dict.fromkeys(r["dictionary"] for r in rows):
        for n in cfg.n_features:
            vals = [r["tpp"] for r in rows if r["dictionary"] == key and r["n"] == n]
            summary[f"{key}@{n}"] = sum(vals) / len(vals)
    return EvalResult("tpp", rows, summary, settings(cfg))
