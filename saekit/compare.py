"""Compare dictionaries (SAEs, SNMF, ...) on one model and one token set.

Per dictionary: reconstruction (FVU against L0, CE/KL recovered, neurons per feature).
Per pair: a one-to-one Hungarian matching of decoder directions in one space (mean
matched |cos|, MMCS both ways, the level random directions reach) and the Pearson
correlation of the matched features' codes over the tokens. Optionally, the stability
of each configuration across refits with several seeds; and, where the demo corpus's
planted concepts can be labelled, each dictionary's best feature per concept family.
Only the Dictionary interface is used (``encode``, ``active``, ``W_dec``, ``cfg``), so
every kind is compared the same way.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.harvest import harvest
from saekit.config import load_config
from saekit.data import FAMILIES, concept_labels, load_tokens, token_mask
from saekit.dictionaries import REGISTRY
from saekit.formats import load_dictionary
from saekit.jobs import claim_output
from saekit.metrics import Correlation, Match, match, mmcs, unit_rows
from saekit.metrics.feature_space import (
    chance_matched_cos,
    common_space,
    residual_directions,
)
from saekit.metrics.spliced import evaluate
from saekit.models import HookedModel, hook_width, load_model, model_device, model_name
from saekit.report import Result, Section, figure_png
from saekit.schema import add_config_arguments, add_config_file_arguments, given_overrides
from saekit.training.api import fit

#: Hook kinds whose activations live in the residual-stream basis (d_model).
#: Bins of matched |cos| for the similarity histograms.
HIST_EDGES = [i / 20 for i in range(21)]
#: Code correlation above which a matched pair counts as firing together.
CORR_THRESHOLD = 0.5


# --------------------------------------------------------------------------- streaming accumulators


class ConceptCounts:
    """Token counts per feature and concept class (both, feature fires, concept present),
    and from them precision, recall and F1 of firing against each concept."""

    def __init__(self, d_dict: int, n_classes: int, device: Any = None):
        self.tp = torch.zeros(d_dict, n_classes, dtype=torch.long, device=device)
        self.fires = torch.zeros(d_dict, dtype=torch.long, device=device)
        self.pos = torch.zeros(n_classes, dtype=torch.long, device=device)

    def update(self, active: Tensor, labels: Tensor) -> None:
        """``active``: bool ``[n, d_dict]`` from the dictionary's ``active()``; ``labels``:
        ``[n]`` class indices, -1 for none."""
        labels = labels.to(active.device)
        onehot = torch.nn.functional.one_hot(labels.clamp_min(0), self.pos.numel()) * (labels >= 0)[:, None]
        # A float32 matmul of 0/1 values is exact while a batch has under 2**24 rows.
        self.tp += (active.float().T @ onehot.float()).round().long()
        self.fires += active.sum(0)
        self.pos += onehot.sum(0)

    def scores(self) -> dict[str, Tensor]:
        """``precision``, ``recall``, ``f1``: float64 ``[d_dict, n_classes]``, 0 where undefined."""
        tp, fires, pos = self.tp.double(), self.fires.double()[:, None], self.pos.double()[None, :]
        return {"precision": tp / fires.clamp_min(1), "recall": tp / pos.clamp_min(1),
                "f1": 2 * tp / (fires + pos).clamp_min(1)}


# --------------------------------------------------------------------------- the report


_RECON_COLS = ["name", "kind", "hook", "d_dict", "k", "fvu", "l0", "neurons_per_feature", "ce_recovered_zero",
               "ce_recovered_mean", "kl_recovered_zero", "kl_recovered_mean", "frac_dead"]
_MATCH_COLS = ["n_matched", "mean_matched_cos", "mmcs_a_to_b", "mmcs_b_to_a", "chance_matched_cos",
               "act_corr_mean", "frac_act_corr_above_0.5", "n_corr_undefined"]


@dataclass
class Comparison:
    """What :func:`compare` measured. Its :attr:`result` is the one result type of every
    analysis (:class:`saekit.report.Result`, named ``compare``: ``rows`` the reconstruction
    table, ``tables`` matching, stability and concepts); ``save(dir)`` writes it."""

    reconstruction: list[dict[str, Any]]
    """Per dictionary: name, kind, hook, d_dict, k, neurons_per_feature (mean nonzero
    ``W_dec`` entries per row; d_in when dense) and all of ``evaluate``'s numbers."""
    matching: list[dict[str, Any]]
    """Per pair: ``space`` (or ``comparable`` False and a ``reason``), mean matched |cos|,
    MMCS a→b (mean over a's features of the best |cos| in b) and b→a, the chance level, and
    the matched codes' correlation (mean where defined, fraction above 0.5)."""
    stability: list[dict[str, Any]]
    """Per distinct configuration: matched |cos| between refits with seeds 0..S-1 (mean,
    min, max over pairs of seeds); empty when seeds is 1."""
    concepts: list[dict[str, Any]]
    """Per dictionary and concept family: the feature whose firing has the best F1 against
    the family's tokens, with precision and recall; empty where concepts are not labelled."""
    histograms: dict[str, Any]
    """``{"edges": [...], "counts": {"a vs b": [...]}}``: matched |cos| per comparable pair."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Model, data, token count, hooks, names, seeds."""

    @cached_property
    def result(self) -> Result:
        """The comparison as a :class:`~saekit.report.Result` (figures drawn once, on first use)."""
        m = self.meta
        figures = _figures(self.reconstruction, self.histograms)
        sections = [
            Section("Reconstruction", f"Model `{m.get('model')}`, {m.get('n_tokens', 0):,} tokens of "
                    f"`{m.get('data')}`, hooks {', '.join(f'`{h}`' for h in m.get('hooks', []))}. FVU against L0; "
                    "CE/KL recovered under zero and mean ablation.", "compare", tuple(_RECON_COLS), ("fvu_l0.png",)),
            Section("Feature matching", "Hungarian matching of decoder directions by |cos| (MLP directions "
                    "through W_out against residual ones); `chance_matched_cos`: the same on random directions; "
                    "`act_corr`: Pearson correlation of matched codes over the tokens.", "matching",
                    figures=("similarity.png",))]
        if self.stability:
            sections.append(Section(f"Stability across {m.get('seeds')} seeds", "Matched |cos| between refits "
                                    "with different seeds on the same activations.", "stability"))
        if self.concepts:
            sections.append(Section("Planted concepts", "Per concept family, the feature whose firing (`active()`) "
                                    "has the best F1 against the family's tokens.", "concepts"))
        summary = {"n_dictionaries": len(self.reconstruction), "n_pairs": len(self.matching),
                   "n_comparable": sum(bool(r.get("comparable")) for r in self.matching)}
        return Result("compare", self.reconstruction, summary, dict(self.meta), figures,
                      tables={"matching": self.matching, "stability": self.stability, "concepts": self.concepts},
                      sections=tuple(sections), title="Dictionary comparison", data={"histograms": self.histograms})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document :meth:`save` writes as ``compare.json`` (NaN/inf become None)."""
        return self.result.to_dict()

    def markdown(self, images: bool = True) -> str:
        """The report as Markdown; ``images`` links the PNGs :meth:`save` writes beside it."""
        return self.result.markdown(images)

    def __str__(self) -> str:
        return self.markdown(images=False)

    def save(self, out_dir: str | Path) -> Path:
        """``self.result.save(out_dir)``: ``compare.csv`` (reconstruction), ``matching.csv``,
        ``stability.csv`` and ``concepts.csv`` where not empty, ``compare.json``, the PNGs,
        ``report.md`` and ``index.html``, each atomically."""
        return self.result.save(out_dir)


def _figures(reconstruction: list[dict[str, Any]], histograms: dict[str, Any]) -> dict[str, bytes]:
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global backend state

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ok = [r for r in reconstruction if all(isinstance(r.get(c), (int, float)) and math.isfinite(r[c])
                                           for c in ("l0", "fvu"))]
    for hook in dict.fromkeys(r["hook"] for r in ok):  # FVUs of different hooks are not comparable
        pts = sorted((r["l0"], r["fvu"], r["name"]) for r in ok if r["hook"] == hook)
        front = [p for i, p in enumerate(pts) if all(p[1] < q[1] for q in pts[:i])]  # none sparser is better
        dots = ax.scatter([p[0] for p in pts], [p[1] for p in pts], zorder=3, label=hook)
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=dots.get_facecolor()[0], lw=1)
        for x, y, name in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if ok:
        ax.legend(fontsize=7, title="hook (line: Pareto front)", title_fontsize=7)
        if max(r["l0"] for r in ok) > 10 * max(min(r["l0"] for r in ok), 1e-3):
            ax.set_xscale("log")
    ax.set(xlabel="L0 (active features per token)", ylabel="FVU", title="Reconstruction against sparsity")
    figs = {"fvu_l0.png": figure_png(fig)}
    if histograms.get("counts"):
        fig = Figure(figsize=(6, 4.2))
        ax = fig.subplots()
        for label, counts in histograms["counts"].items():
            ax.stairs([c / max(sum(counts), 1) for c in counts], histograms["edges"], label=label)
        ax.set(xlabel="matched |cos|", ylabel="fraction of matched pairs", title="Feature matching")
        ax.legend(fontsize=7)
        figs["similarity.png"] = figure_png(fig)
    return figs


# --------------------------------------------------------------------------- compare


def _resolve(dictionaries: Any, names: Any, model: HookedModel) -> tuple[list[Any], list[str]]:
    """Load paths (onto the model's device), name every dictionary, check it fits the model."""
    if isinstance(dictionaries, (str, Path)) or hasattr(dictionaries, "W_dec"):
        dictionaries = [dictionaries]
    dev = model_device(model)
    dicts = [load_dictionary(s, device=dev) if isinstance(s, (str, Path)) else s for s in dictionaries]
    if not dicts:
        raise ValueError("compare needs at least one dictionary")
    if names is None:  # a trainer run's result is <run>/dictionary: name it by the run
        auto = [f"{d.cfg.kind}-{d.cfg.d_dict}" if not isinstance(s, (str, Path)) else
                f"{Path(s).parent.name}/dictionary" if Path(s).name == "dictionary" else Path(s).name
                for s, d in zip(dictionaries, dicts, strict=True)]
        names = [n if auto.count(n) == 1 else f"{n}#{auto[:i + 1].count(n)}" for i, n in enumerate(auto)]
    names = [str(n) for n in names]
    if len(names) != len(dicts) or len(set(names)) != len(names):
        raise ValueError(f"names must be {len(dicts)} distinct strings, got {names}")
    for d, name in zip(dicts, names, strict=True):
        if not d.cfg.hook:
            raise ValueError(f"dictionary {name!r} ({d!r}) has no recorded hook: compare needs the "
                             "hook its activations came from (set cfg.hook, or pass hook= to fit)")
        try:
            width = hook_width(model, d.cfg.hook)
        except ValueError as e:
            raise ValueError(f"dictionary {name!r}: {e}") from e
        if width != d.cfg.d_in:
            raise ValueError(f"dictionary {name!r} has d_in={d.cfg.d_in}, but hook {d.cfg.hook!r} of "
                             f"{model_name(model)} has width {width}")
        if d.W_dec.device.type != dev.type:
            raise ValueError(f"dictionary {name!r} is on {d.W_dec.device}, the model on {dev}: "
                             f"splicing needs one device (dictionary.to({str(dev)!r}))")
    return dicts, names


def _match_pair(a: Any, b: Any, model: HookedModel) -> tuple[str, Match | None, Tensor | None, Tensor | None]:
    """``(space, match, directions a, directions b)``, or ``(reason, None, None, None)``."""
    # Decoder rows live at the output hook (a transcoder's; an SAE's own hook).
    space, reason = common_space(a.cfg.output_hook, b.cfg.output_hook, model)
    if space is None:
        return reason, None, None, None
    wa, wb = ((unit_rows(a.W_dec), unit_rows(b.W_dec)) if space == a.cfg.output_hook
              else (residual_directions(a, model), residual_directions(b, model)))
    return space, match(wa, wb), wa, wb


def compare(dictionaries: Any, model: HookedModel | str, tokens: Tensor | None = None, *, data: Any = "demo",
            n_tokens: int = 65536, ctx_len: int = 128, seeds: int = 1, names: list[str] | None = None,
            batch_size: int = 16, progress: bool = False, refit_tokens: int | None = None,
            refit_batch_size: int = 256, refit_options: dict[str, Any] | None = None) -> Comparison:
    """Compare dictionaries on one model and one set of tokens.

    Parameters
    ----------
    dictionaries
        Dictionary objects or paths (``saekit.load_dictionary``, loaded onto the model's
        device). Each needs ``cfg.hook`` on ``model``, of width ``d_in``.
    model
        A model with TransformerLens' hook API, or a spec for ``saekit.load_model``.
    tokens
        ``[n_windows, ctx_len]``; default ``load_tokens(data, model, n_tokens, ctx_len)``,
        where ``data="demo"`` means the demo LM's held-out text.
    seeds
        Above 1: refit each distinct configuration with seeds 0..seeds-1 on the harvested
        activations (``saekit.fit``, any kind) and match the refits with each other.
    names
        Labels in the report; default from the paths, else ``{kind}-{d_dict}``.
    batch_size
        Windows per forward pass (harvest and CE/KL).
    refit_tokens, refit_batch_size, refit_options
        One pass over the first ``refit_tokens`` harvested activations (default all) in
        batches of ``refit_batch_size`` (kinds fitted by exact passes ignore it);
        ``refit_options`` go to every ``saekit.fit`` call, or, keyed by kind
        (``{"topk": {"lr": 1e-3}, "snmf": {"max_iter": 50}}``), to that kind's refits.

    Returns
    -------
    Comparison
        The tables and histograms; ``save(dir)`` writes the report.

    Notes
    -----
    The LM runs once to harvest every hook, and each dictionary encodes each token once,
    in one streamed pass feeding the correlations and concept counts. The other LM
    passes are ``evaluate``'s (its harvest and the spliced/ablated CE/KL forwards).
    """
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    model = load_model(model)
    dicts, names = _resolve(dictionaries, names, model)
    source = "given tokens" if tokens is not None else "demo:heldout" if data == "demo" else str(data)
    if tokens is None:
        tokens = load_tokens("demo:heldout" if data == "demo" else data, model, n_tokens, ctx_len)
    hooks = list(dict.fromkeys(d.cfg.hook for d in dicts))
    acts = harvest(model, hooks, tokens, batch_size, progress=progress)
    n = len(acts[hooks[0]])
    if n == 0:
        raise ValueError("the tokens hold no real tokens to evaluate on (all BOS/padding)")

    recon, evals = [], {}
    for d, name in zip(dicts, names, strict=True):
        if id(d) not in evals:  # the same object twice is evaluated once
            evals[id(d)] = evaluate(model, d, tokens, batch_size=batch_size)
        row = {"name": name, "kind": d.cfg.kind, "hook": d.cfg.hook, "d_dict": d.cfg.d_dict, "k": d.cfg.k,
               "neurons_per_feature": float((d.W_dec != 0).sum(1).double().mean()),
               **{k: v if isinstance(v, int) else float(v) for k, v in evals[id(d)].items()}}
        recon.append({**{c: row[c] for c in _RECON_COLS}, **row})

    # Matching needs only the decoders: done first, so the one codes pass below can
    # feed the correlations of the matched pairs.
    pairs = [(i, j, *_match_pair(dicts[i], dicts[j], model))
             for i in range(len(dicts)) for j in range(i + 1, len(dicts))]
    corrs = {(i, j): Correlation(m.rows, m.cols) for i, j, _, m, *_ in pairs if m is not None}
    try:  # concept labels need every concept word to be one token (the demo LM's tokenizer)
        labels = concept_labels(tokens.cpu(), model)[token_mask(tokens.cpu(), model)]  # harvest's token order
        counts = [ConceptCounts(d.cfg.d_dict, len(FAMILIES), d.W_dec.device) for d in dicts]
    except (ValueError, TypeError):
        labels, counts = None, []
    chunk = max(256, min(8192, 2**24 // max(d.cfg.d_dict for d in dicts)))  # ≤ 64 MB of codes per dictionary
    starts = range(0, n, chunk)
    if progress:
        starts = tqdm(starts, desc="codes", unit="chunk")
    with torch.no_grad():
        for lo in starts:
            codes = [d.encode(acts[d.cfg.hook][lo:lo + chunk].to(d.W_dec.device, d.W_dec.dtype)) for d in dicts]
            for cc, d, c in zip(counts, dicts, codes, strict=False):
                cc.update(d.active(c), labels[lo:lo + chunk])
            for (i, j), corr in corrs.items():
                corr.update(codes[i], codes[j])

    matching, hist = [], {"edges": HIST_EDGES, "counts": {}}
    edges = torch.tensor(HIST_EDGES, dtype=torch.float64)
    for i, j, where, m, wa, wb in pairs:
        row = {"a": names[i], "b": names[j], "space": where if m else None, "comparable": m is not None,
               "reason": "" if m else where, **dict.fromkeys(_MATCH_COLS)}
        if m is not None:
            r = corrs[i, j].result()
            ok = r[~torch.isnan(r)]
            row.update({"n_matched": len(m.cos), "mean_matched_cos": m.cos.mean().item(),
                        "mmcs_a_to_b": mmcs(wb, wa), "mmcs_b_to_a": mmcs(wa, wb),
                        "chance_matched_cos": chance_matched_cos(len(wa), len(wb), wa.shape[1]),
                        "act_corr_mean": ok.mean().item() if len(ok) else None,
                        "frac_act_corr_above_0.5": (ok > CORR_THRESHOLD).double().mean().item() if len(ok) else None,
                        "n_corr_undefined": len(r) - len(ok)})
            hist["counts"][f"{names[i]} vs {names[j]}"] = torch.histogram(m.cos, edges).hist.long().tolist()
        matching.append(row)

    concepts = []
    for name, cc in zip(names, counts, strict=False):
        s = {k: v.cpu() for k, v in cc.scores().items()}
        for f in (f for f in range(len(FAMILIES)) if cc.pos[f] > 0):
            b = int(s["f1"][:, f].argmax())
            concepts.append({"dictionary": name, "family": FAMILIES[f], "tokens": int(cc.pos[f]), "feature": b,
                             "f1": s["f1"][b, f].item(), "precision": s["precision"][b, f].item(),
                             "recall": s["recall"][b, f].item(), "feature_fires": int(cc.fires[b])})

    stability = (_stability(dicts, names, acts, model, seeds, refit_tokens, refit_batch_size, refit_options)
                 if seeds > 1 else [])
    meta = {"model": model_name(model), "data": source, "n_tokens": n, "n_windows": len(tokens),
            "hooks": hooks, "names": names, "seeds": seeds}
    return Comparison(recon, matching, stability, concepts, hist, meta)


def _stability(dicts, names, acts, model, seeds, refit_tokens, refit_batch_size, refit_options) -> list[dict]:
    """Refit each distinct configuration with seeds 0..seeds-1; match the refits pairwise."""
    by_kind = bool(refit_options) and all(k in REGISTRY for k in refit_options)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(d.cfg for d in dicts):
        key = (c.kind, c.hook, c.d_dict, c.k, json.dumps(c.options, sort_keys=True, default=str))
        groups.setdefault(key, []).append(i)
    rows = []
    for idx in groups.values():
        c = dicts[idx[0]].cfg
        x = acts[c.hook][:refit_tokens]
        extra = (refit_options.get(c.kind, {}) if by_kind else refit_options) or {}
        fits = [fit(x, kind=c.kind, d_dict=c.d_dict, k=c.k, seed=s, hook=c.hook, model=model,
                           batch_size=refit_batch_size, **{**c.options, **extra})
                for s in range(seeds)]
        cos = [match(fits[s].W_dec, fits[t].W_dec).cos.mean().item() for s in range(seeds) for t in range(s + 1, seeds)]
        rows.append({"kind": c.kind, "hook": c.hook, "d_dict": c.d_dict, "k": c.k,
                     "dictionaries": ", ".join(names[i] for i in idx), "seeds": seeds, "refit_tokens": len(x),
                     "mean_matched_cos": sum(cos) / len(cos), "min_matched_cos": min(cos), "max_matched_cos": max(cos), "chance_matched_cos": chance_matched_cos(c.d_dict, c.d_dict, c.d_in)})
    return rows


# --------------------------------------------------------------------------- the job and its command


@dataclass
class CompareConfig:
    """One comparison (``saekit compare``): :func:`compare`'s arguments, as a config."""

    dictionaries: list[str]
    """Dictionaries to compare: directories in any format saekit reads, registry ids, hf:// paths."""
    model: str
    """Model spec for ``saekit.load_model``."""
    data: str = "demo"
    """Text source; 'demo' evaluates on the demo LM's held-out text."""
    n_tokens: int = 65536
    """Tokens to evaluate on."""
    ctx_len: int = 128
    """Tokens per window."""
    seeds: int = 1
    """Refits per configuration for stability (1: none)."""
    names: list[str] | None = None
    """Labels in the report (default: from the paths)."""
    batch_size: int = 16
    """Windows per forward pass."""
    refit_tokens: int | None = None
    """Harvested activations each refit passes over (default: all)."""
    refit_batch_size: int = 256
    """Batch of each refit."""
    refit_options: dict[str, Any] = field(default_factory=dict)
    """Keywords of every refit's ``saekit.fit``, or per kind (``{topk = {lr = 1e-3}}``)."""
    device: str | None = None
    """Default: cuda when present, else cpu."""

    RANGES = {name: (1, None) for name in ("n_tokens", "ctx_len", "seeds", "batch_size", "refit_tokens",
                                           "refit_batch_size")}

    def validate(self, where: str = "config") -> None:
        if not self.dictionaries:
            raise ValueError(f"{where}: key 'dictionaries' lists no dictionary")


def run_compare(config: CompareConfig | str | Path | None, out: str | Path | None = None,
                overrides: list[str] | None = None, *, overwrite: bool = False, progress: bool = True) -> Comparison:
    """Run a comparison from its config, as ``saekit compare`` does, and return it.

    ``config`` is a :class:`CompareConfig` or a TOML file of its fields; ``overrides``
    (``key=value``, values in TOML) apply after it, checked before any work. With
    ``out``, the directory is claimed first (refused when it holds an earlier report,
    unless ``overwrite``) and the report saved there.

    :func:`compare` keeps its signature (dictionaries and a model, in memory); this is
    its job entry, under another name so that neither changes meaning.
    """
    cfg = load_config(config, overrides, cls=CompareConfig)
    if out is not None:
        claim_output(out, overwrite=overwrite, what="comparison report")
    model = load_model(cfg.model, device=cfg.device)
    result = compare(cfg.dictionaries, model, data=cfg.data, n_tokens=cfg.n_tokens, ctx_len=cfg.ctx_len,
                     seeds=cfg.seeds, names=cfg.names, batch_size=cfg.batch_size, progress=progress,
                     refit_tokens=cfg.refit_tokens, refit_batch_size=cfg.refit_batch_size,
                     refit_options=cfg.refit_options or None)
    if out is not None:
        result.save(out)
    return result


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``saekit compare`` on the object ``ArgumentParser.add_subparsers()`` returns."""
    p = subparsers.add_parser("compare", help="compare dictionaries: reconstruction, feature matching, "
                                              "stability across seeds, planted concepts")
    add_config_arguments(p, CompareConfig, positional={"dictionaries": "dicts"})
    add_config_file_arguments(p)
    p.add_argument("--out", default="runs/compare", help="report directory (default runs/compare)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output directory")
    p.set_defaults(fn=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """``saekit compare``: :func:`run_compare` with the flags as overrides; print the tables."""
    result = run_compare(args.config, args.out, given_overrides(CompareConfig, args) + args.set,
                         overwrite=args.overwrite)
    print(result)
    print(f"wrote {Path(args.out) / 'index.html'}, report.md, compare.json, compare.csv and the other CSV "
          "tables, PNG plots")
    return 0
