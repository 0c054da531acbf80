"""Spurious correlation removal (SAEBench's ``scr``, after Marks et al.'s SHIFT): a probe
trained where a spurious attribute always goes with the target learns both; ablating the
dictionary's features for the spurious attribute should leave it the target alone.

Two attributes of word tokens of real text (:mod:`saekit.evals.concept_tasks`): the
**target** is the text a token comes from (``sources[0]`` against ``sources[1]``,
e.g. English prose against Python documentation), the **spurious** attribute whether
the word starts with one of ``spurious_letters``. Then:

1. A biased training set where the two always agree (``sources[0]`` words that start
   with a spurious letter, ``sources[1]`` words that do not); a balanced training set
   and a balanced test set with all four combinations in equal numbers.
2. Dense probes (logistic regression on the activations at ``hook``): the **biased**
   probe for the target on the biased set, the **oracle** for the target on the balanced
   set, and a probe for the spurious attribute on the balanced set.
3. Per dictionary and ``n``: the ``n`` features of largest effect on the spurious probe
   (mean code on its positives times the probe's weight along the decoder row, as in
   :mod:`saekit.evals.tpp`) are ablated from the test activations,
   ``x − Σ c_l W_dec,l``, and the biased probe is tested on the target again.
4. ``SCR(n) = (A_ablated − A_biased) / (A_oracle − A_biased)``: 1 when ablating the
   features removes the whole bias, 0 when it changes nothing. ``n`` random features of
   the same dictionary are the control. A transcoder is probed and ablated at its
   output hook, where its decoder writes.

Departures from SAEBench, and why: SAEBench's datasets (Bias in Bios profession × gender,
Amazon reviews category × sentiment) cannot be downloaded here; text source × first
letter gives two attributes of the same tokens from text that installs offline. SAEBench
ablates inside the forward pass and re-reads a later layer's mean-pooled text; saekit
ablates at the probed hook on single tokens, so the effect is the dictionary's alone.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from saekit.activations.harvest import harvest
from saekit.data import token_mask
from saekit.evals.common import EvalConfig, EvalResult, encode_rows, load_dictionaries, settings
from saekit.evals.concept_tasks import first_letter_lookup, source
from saekit.evals.sparse_probing import fit_probe, predict
from saekit.models import load_model
from saekit.tokenization import token_strings


@dataclass
class Config(EvalConfig):
    """SCR settings (the common fields: :class:`~saekit.evals.common.EvalConfig`)."""

    hook: str = "blocks.2.hook_resid_post"
    dictionaries: list[str] | None = None
    """Dictionaries fitted on ``hook`` (transcoders: reading ``hook``)."""
    n_tokens: int = 65536
    sources: list[str] = field(default_factory=lambda: ["english:heldout", "demo:heldout"])
    """The two text sources whose difference is the target attribute."""
    spurious_letters: str = "abcdefghijklm"
    """First letters that make a word's spurious attribute true."""
    per_cell: int = 1000
    """Words per (target, spurious) combination in each split, at most."""
    min_per_cell: int = 30
    n_features: list[int] = field(default_factory=lambda: [2, 5, 10, 20])
    l2: float = 1e-3


def scr_splits(t: Tensor, s: Tensor, cfg: Config, g: torch.Generator) -> dict[str, Tensor]:
    """Row indices of the biased training set, the balanced training set and the balanced
    test set (disjoint), each combination subsampled to the same size."""
    cells = [((t == a) & (s == b)).nonzero().squeeze(1) for a in (0, 1) for b in (False, True)]
    cells = [c[torch.randperm(len(c), generator=g)] for c in cells]  # (source, spurious): (0,F) (0,T) (1,F) (1,T)
    n = min(cfg.per_cell, min(len(c) for c in cells) // 4)
    if n < cfg.min_per_cell:
        raise ValueError(f"SCR needs {4 * cfg.min_per_cell} words of each (source, spurious) combination; "
                         f"found {[len(c) for c in cells]} in {cfg.n_tokens} tokens of {cfg.sources}: "
                         "more tokens, or other spurious_letters")
    # biased: source 0 words start with a spurious letter, source 1's do not
    return {"biased": torch.cat([cells[1][:2 * n], cells[2][:2 * n]]),
            "balanced": torch.cat([c[2 * n:3 * n] for c in cells]),
            "test": torch.cat([c[3 * n:4 * n] for c in cells])}


def run(cfg: Config, model: Any = None, progress: bool = False) -> EvalResult:
    """SCR of each dictionary (module docstring).

    Returns
    -------
    EvalResult named ``scr``: one row per (dictionary or its random control, n) with the
    biased probe's accuracy after ablation and ``scr``; the summary holds the biased,
    oracle and spurious probes' accuracies, the words per combination and ``NAME@n``.
    """
    if len(cfg.sources) != 2:
        raise ValueError(f"Config.sources must name exactly two text sources, got {cfg.sources!r}")
    letters = cfg.spurious_letters.lower()
    if not letters or not set(letters) < set(string.ascii_lowercase):
        raise ValueError(f"Config.spurious_letters must be some (not all) of a-z, got {cfg.spurious_letters!r}")
    if not cfg.n_features or any(n < 1 for n in cfg.n_features):
        raise ValueError(f"Config.n_features must be positive integers, got {cfg.n_features!r}")
    if model is None:
        model = load_model(cfg.model, device=cfg.device)
    dicts = load_dictionaries(cfg.dictionaries, model, cfg.hook, transcoders="reads")
    tokens, target, _ = source(cfg, model)
    mask = token_mask(tokens, model)
    lut = first_letter_lookup(token_strings(model))
    first = lut[tokens.clamp_max(len(lut) - 1)][mask]
    target = target[mask]
    words = (first >= 0).nonzero().squeeze(1)
    spurious_ids = torch.tensor([string.ascii_lowercase.index(c) for c in sorted(set(letters))])
    s = torch.isin(first[words], spurious_ids)
    split = scr_splits(target[words], s, cfg, torch.Generator().manual_seed(cfg.seed))
    rows_used = words[torch.cat(list(split.values()))]
    outputs = list(dict.fromkeys(d.cfg.output_hook for _, d in dicts if d.cfg.is_transcoder))
    acts = harvest(model, [cfg.hook, *outputs], tokens, cfg.batch_size, mask=mask, progress=progress)
    sizes = [len(v) for v in split.values()]
    parts = dict(zip(split, torch.arange(len(rows_used)).split(sizes), strict=True))
    y_t, y_s = target[rows_used], torch.isin(first[rows_used], spurious_ids)

    def probes(x: Tensor) -> dict[str, Any]:
        b, o, sp = parts["biased"], parts["balanced"], parts["test"]
        out = {"biased": fit_probe(x[b], y_t[b].bool(), cfg.l2), "oracle": fit_probe(x[o], y_t[o].bool(), cfg.l2),
               "spurious": fit_probe(x[o], y_s[o], cfg.l2)}
        acc = {k: (predict(x[sp], p) == (y_s[sp] if k == "spurious" else y_t[sp].bool())).double().mean().item()
               for k, p in out.items()}
        return {"probes": out, "accuracy": acc}

    spaces = {h: acts[h][rows_used].float() for h in [cfg.hook, *outputs]}
    fitted = {h: probes(x) for h, x in spaces.items()}
    base = fitted[cfg.hook]["accuracy"]
    g = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, Any]] = []
    test, bal = parts["test"], parts["balanced"]
    for name, d in dicts:
        space = d.cfg.output_hook if d.cfg.is_transcoder else cfg.hook
        x, f = spaces[space], fitted[space]
        z = encode_rows(d, spaces[cfg.hook].to(d.W_dec.device)).float().cpu()
        w_dec = d.W_dec.detach().float().cpu()
        _, std, w = f["probes"]["spurious"]
        effect = z[bal][y_s[bal]].mean(0) * (w_dec.double() @ (w[:-1] / std)).float()
        order = effect.argsort(descending=True)
        a_b, a_o = f["accuracy"]["biased"], f["accuracy"]["oracle"]
        for n in cfg.n_features:
            for control, chosen in (("", order[:n]), ("/random", torch.randperm(len(effect), generator=g)[:n])):
                ablated = x[test] - z[test][:, chosen] @ w_dec[chosen]
                acc = (predict(ablated, f["probes"]["biased"]) == y_t[test].bool()).double().mean().item()
                rows.append({"dictionary": name + control, "n": n, "ablated_accuracy": acc,
                             "scr": (acc - a_b) / (a_o - a_b) if a_o - a_b > 1e-6 else float("nan")})
    summary: dict[str, Any] = {"biased_accuracy": base["biased"], "oracle_accuracy": base["oracle"],
                               "spurious_accuracy": base["spurious"], "per_cell": sizes[-1] // 4,
                               "sources": list(cfg.sources)}
    for r in rows:
        summary[f"{r['dictionary']}@{r['n']}"] = r["scr"]
    return EvalResult("scr", rows, summary, settings(cfg))
