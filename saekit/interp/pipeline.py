"""``saekit interp``: collect, describe, score and write the dashboard, for any dictionary.

The steps, each in its own module:

1. :func:`saekit.interp.store.collect` over the describing windows;
2. the offline describers (:mod:`saekit.interp.describe`) for the shown features, PRISM
   clusters (:mod:`saekit.interp.prism`) for the most frequent ``prism_features`` of them;
3. a :class:`~saekit.interp.score.ScoringCorpus` of *other* windows (the tokens after
   the describing ones), on which every score is computed;
4. with an LLM endpoint configured (``SAEKIT_LLM_BASE_URL`` and ``SAEKIT_LLM_MODEL``, or
   ``llm="on"``), for the first ``llm_features``, one feature at a time
   (:func:`saekit.interp.llm_run.run_llm`): PRISM cluster labels, MaxAct and
   output-centric explanations (:mod:`saekit.interp.prompts`), scored also by detection,
   fuzzing (:mod:`saekit.interp.detection`), CoSy on LLM-written texts and the intruder
   test, within ``llm_budget_s`` when set (the PRISM clusters of other features keep
   their offline labels). A failing call costs one answer, never the run, and every
   answer's outcome is counted per call type;
5. the offline scores of every description, each beside a random-description baseline:
   CoSy, embedding AUROC and delphi's simulation score with the offline simulator
   (:mod:`saekit.interp.simulation`; ``simulation="off"`` leaves it out); with
   ``simulation="llm"`` and an LLM, the LLM features' MaxAct descriptions (and their
   random baselines) are also simulated by the LLM (``llm_simulation``: one call per
   held-out example, after the rest of the LLM work and under the same time budget's
   deadline, so the calls that no longer fit are counted as skipped);
6. the result (:class:`saekit.report.Result` named ``interp``) with the dashboard of
   :func:`saekit.interp.dashboard.render_dashboard` as its pages; ``result.save(dir)``
   writes it (``index.html`` the dashboard, ``interp.json``, ``interp.csv``, ``report.md``).

Which features are shown: ``features="200"`` (the default) takes the 200 that fire most
often on the describing windows, ``"all"`` every feature (dead ones get the logit lens
only), ``"3,17,42"`` those.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from saekit import report
from saekit.config import load_config
from saekit.data import load_tokens
from saekit.formats import load_dictionary
from saekit.interp import describe, prism, score, simulation
from saekit.interp.answers import CallLog
from saekit.interp.budget import SIZES
from saekit.interp.dashboard import render_dashboard
from saekit.interp.llm import ENV_BASE_URL, ENV_MODEL, LLMError, client_from_config
from saekit.interp.llm_run import calls_table, run_llm
from saekit.interp.prism import polysemanticity
from saekit.interp.store import collect
from saekit.jobs import claim_output
from saekit.metrics.uncertainty import mean_se, paired_difference
from saekit.models import load_model
from saekit.report import Result
from saekit.report.stats import EMPTY, LOW_N_NOTE, Stat, stat_text
from saekit.schema import add_config_arguments, add_config_file_arguments, given_overrides, plural
from saekit.tokenization import token_strings


@dataclass
class InterpConfig:
    """Settings of one ``saekit interp`` run (the CLI flags, and a TOML-able record)."""

    features: str = "200"
    """How many features to show ("200": the most frequent), "all", or "3,17,42"."""
    n_tokens: int = 65536
    """Tokens to describe from."""
    n_score_tokens: int = 32768
    """Further tokens, disjoint from those, to score on."""
    ctx_len: int = 128
    top_k: int = 100
    """Top windows kept per feature."""
    n_samples: int = 100
    """Uniformly sampled activating windows kept per feature (the decile samples)."""
    prism_features: int = 50
    """Features that get PRISM clusters (embedding costs ~100 windows/s on 2 CPU cores)."""
    prism_windows: int = 20
    """Top-band windows embedded per feature."""
    llm: Literal["auto", "on", "off"] = "auto"
    """"auto": use the LLM endpoint when the environment names one; "on": require it; "off"."""
    llm_features: int = 50
    """Features described and scored by the LLM."""
    llm_budget_s: float | None = None
    """Wall seconds the LLM work may take (None: no limit); see :mod:`saekit.interp.budget`."""
    simulation: Literal["offline", "llm", "off"] = "offline"
    """delphi's simulation score: "offline" (the offline simulator, every description); "llm": that,
    and the LLM simulator on the LLM features' MaxAct descriptions (one call per example); "off"."""
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.llm not in ("auto", "on", "off"):
            raise ValueError(f"llm must be 'auto', 'on' or 'off', got {self.llm!r}")
        if self.simulation not in ("offline", "llm", "off"):
            raise ValueError(f"simulation must be 'offline', 'llm' or 'off', got {self.simulation!r}")
        for name in ("n_tokens", "n_score_tokens", "ctx_len", "top_k", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_samples", "prism_features", "prism_windows", "llm_features"):  # checked before the harvest
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        spec = str(self.features).strip()
        if spec != "all" and not all(s.strip().isdigit() for s in spec.split(",") if s.strip()):
            raise ValueError(f"features must be a number, 'all' or a comma list of indices, got {spec!r}")
        if self.llm_budget_s is not None and not self.llm_budget_s > 0:
            raise ValueError(f"llm_budget_s must be a positive number of seconds or None, got {self.llm_budget_s!r}")


@dataclass
class InterpJob(InterpConfig):
    """``saekit interp``'s settings: the run's (:class:`InterpConfig`) and what it runs on;
    the command's flags are generated from these fields and :func:`run_interp` takes them."""

    dictionary: str = ""
    """Dictionary directory, registry id or hf:// path (required)."""
    model: str = ""
    """Model spec for ``saekit.load_model``: native checkpoint dir, HF dir or name (required)."""
    data: str = "demo"
    """Text source for ``saekit.load_tokens`` (default: the demo corpus)."""
    device: str | None = None
    """Default: cuda when present, else cpu."""

    def validate(self, where: str = "config") -> None:
        missing = [name for name in ("dictionary", "model") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{where}: {' and '.join(missing)} must be given (the dictionary to describe "
                             "and the model it was fitted on)")


#: What :func:`interp` returns: the one result type of every analysis. Kept under this name.
InterpResult = Result


def select_features(store: Any, spec: str) -> list[int]:
    """The features to show; see the module docstring."""
    spec = str(spec).strip()
    if spec == "all":
        return store.features
    count = store.count()
    if spec.isdigit():
        order = count.argsort(descending=True, stable=True)[:int(spec)]
        return [store.features[i] for i in order.tolist() if count[i] > 0]
    try:
        feats = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"features must be a number, 'all' or a comma list of indices, got {spec!r}") from None
    for f in feats:
        store.row(f)  # raises a KeyError naming the feature
    return feats


def _client(cfg: InterpConfig) -> Any:
    if cfg.llm == "off" or (cfg.llm == "auto" and not (os.environ.get(ENV_BASE_URL) and os.environ.get(ENV_MODEL))):
        return None
    return client_from_config()


def interp(model: Any, dictionary: Any, tokens: torch.Tensor, score_tokens: torch.Tensor,
           out: str | Path | None = None, cfg: InterpConfig | None = None, client: Any = None, name: str = "",
           dataset: str = "", progress: bool = True) -> Result:
    """Run the whole auto-interp job (see the module docstring) and return its result.

    Parameters
    ----------
    model, dictionary
        The model and the dictionary to describe.
    tokens, score_tokens
        Windows ``[n, ctx_len]`` to describe from, and disjoint ones to score on.
    out
        Where the feature store (``out/store``) and the LLM part's progress
        (``out/llm_progress.json``) are written as they finish, so that a rerun resumes;
        None keeps everything in memory. The result itself is not written
        (``result.save(dir)`` does).
    cfg
        The run's settings (:class:`InterpConfig`).
    client
        A ready :class:`~saekit.interp.llm.LLMClient`, overriding ``cfg.llm``.
    name, dataset
        The dictionary's and the data's names, for the report.
    progress
        Print the steps and show progress bars.

    Returns
    -------
    Result
        Named ``interp``: ``rows`` one per shown feature (its first description and
        scores); ``summary`` the mean scores per method beside their random baselines,
        ``llm_calls`` (per call type, how many answers parsed, were salvaged, could not
        be parsed, failed or were skipped by the time budget) and ``llm_work`` (the
        budget, the prompt sizes, seconds per feature, the features done and skipped);
        ``tables["llm_calls"]`` the same counts as rows; ``config`` the
        :class:`InterpConfig` and the dictionary; ``pages`` the feature dashboard
        (``index.html``, ``features.json`` with every record, ``features/NNNNN.html``).
    """
    cfg = cfg or InterpConfig()
    client = client if client is not None else _client(cfg)
    t0 = time.time()
    say = print if progress else (lambda *a, **k: None)
    store = collect(model, dictionary, tokens, top_k=cfg.top_k, n_samples=cfg.n_samples, batch_size=cfg.batch_size,
                    seed=cfg.seed, out=None if out is None else Path(out) / "store", dataset=dataset,
                    progress=progress)
    shown = select_features(store, cfg.features)
    vocab = token_strings(model)
    say(f"interp: {plural(len(shown), 'feature')} shown of {dictionary.cfg.d_dict:,}; describing ...")
    offline = describe.describe(store, vocab, shown, model=model, dictionary=dictionary)
    alive = [f for f in shown if store.count()[store.row(f)] > 0]
    clusters = prism.clusters(store, alive[:cfg.prism_features], vocab, max_windows=cfg.prism_windows,
                              seed=cfg.seed, progress=progress)
    say("interp: scoring on held-out windows ...")
    corpus = score.scoring_corpus(model, dictionary, score_tokens, alive, vocab, batch_size=cfg.batch_size,
                                  seed=cfg.seed, progress=progress)
    llm_feats = alive[:cfg.llm_features] if client is not None else []
    llm: dict[str, Any] = {"descriptions": {}, "scores": {}, "calls": {}, "work": None}
    if llm_feats:
        budget = f", within {cfg.llm_budget_s:g} s" if cfg.llm_budget_s else ""
        say(f"interp: LLM explanations for {plural(len(llm_feats), 'feature')} ({client.model}){budget}")
        llm = run_llm(client, model, dictionary, store, corpus, vocab, llm_feats, offline, clusters,
                      budget_s=cfg.llm_budget_s, seed=cfg.seed, out=out, progress=progress)
    descriptions = {f: [("offline", offline[f]["text"])] + [("prism", c.label) for c in clusters.get(f, [])]
                    + llm["descriptions"].get(f, []) for f in alive}
    if cfg.simulation == "llm" and llm["scores"]:
        say("interp: LLM simulation of the MaxAct descriptions ...")
        llm["calls"].update(_llm_simulation(client, corpus, llm, cfg.seed))
    scored = score.score_descriptions(corpus, descriptions, seed=cfg.seed, simulation=cfg.simulation != "off")
    for f, extra in llm["scores"].items():
        row = next((r for r in scored[f] if r["method"] == "maxact"), None)
        if row is not None:
            row["scores"].update(extra)
    pool = sorted({c.label for f in clusters for c in clusters[f]})
    embedded = dict(zip(pool, prism.embed(pool), strict=True))  # once, for labels and baseline
    poly = {f: prism.polysemanticity([c.label for c in clusters[f]], embedded) for f in clusters}
    records = [_record(store, f, vocab, offline[f], scored.get(f, []), clusters.get(f, []), poly.get(f))
               for f in shown]
    summary = summarize(scored, poly, _random_polysemanticity(clusters, embedded, cfg.seed), cfg.seed)
    summary.update(n_tokens=store.n_tokens, n_score_chunks=len(corpus), n_shown=len(shown),
                   llm=getattr(client, "model", None), seconds=round(time.time() - t0, 1),
                   llm_calls=llm["calls"], llm_work=llm["work"])
    calls = calls_table(llm["calls"])
    meta = {"title": f"saekit interp: {name or dictionary.cfg.kind + '-' + str(dictionary.cfg.d_dict)} "
                     f"on {dictionary.cfg.hook}",
            "dictionary": name, "kind": dictionary.cfg.kind, "d_dict": dictionary.cfg.d_dict,
            "hook": dictionary.cfg.hook, "model": store.manifest["model"], "n_tokens": store.n_tokens,
            "n_features_shown": len(shown), "score_columns": ["cosy_auc", "embedding_auroc", "random_cosy_auc"]
            + (["simulation", "random_simulation"] if cfg.simulation != "off" else [])
            + (["detection_balanced_accuracy", "fuzzing_balanced_accuracy"] if llm["scores"] else [])
            + (["llm_simulation"] if cfg.simulation == "llm" and llm["scores"] else []),
            "notes": f"described on {store.n_tokens:,} tokens of {dataset or 'the given tokens'}; scored on "
                     f"{len(corpus)} held-out chunks of 32 tokens; random_* = another feature's description "
                     "scored on this feature", "llm_calls": calls}
    config = {**asdict(cfg), "dictionary": name, "kind": dictionary.cfg.kind, "d_dict": dictionary.cfg.d_dict,
              "hook": dictionary.cfg.hook, "model": store.manifest["model"], "data": dataset}
    return Result("interp", [_row(r) for r in records], summary, config, title=meta["title"],
                  tables={"llm_calls": calls} if calls else {}, pages=render_dashboard(meta, records))


def _random_polysemanticity(clusters: dict[int, list], embedded: dict[str, torch.Tensor],
                            seed: int) -> float | None:
    """PRISM's baseline: the polysemanticity of as many labels drawn from the whole pool."""
    pool = list(embedded)
    rng = np.random.default_rng(seed)
    vals = [polysemanticity(list(rng.choice(pool, len(c), replace=False)), embedded)
            for c in clusters.values() if len(c) >= 2 and len(pool) >= len(c)]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


#: Scores the summary also pairs with their random-description control, item by item
#: (``{key}_vs_random``: :func:`~saekit.metrics.uncertainty.paired_difference`).
PAIRED_SCORES = ("simulation", "llm_simulation")


def summarize(scored: dict[int, list[dict]], poly: dict[int, float | None], random_poly: float | None,
              seed: int = 0) -> dict:
    """Mean of every score per method, the PRISM best-of-k and mean, with baselines; each
    also with its standard error over features (``{key}_se``) and how many features have
    it (``{key}_n``); the :data:`PAIRED_SCORES` with their
    paired difference from the random control and its bootstrap 95% interval
    (``{key}_vs_random``)."""
    by: dict[str, dict[str, list[float]]] = {}
    for rows in scored.values():
        for r in rows:
            for k, v in r["scores"].items():
                by.setdefault(r["method"], {}).setdefault(k, []).append(v)
        prism_rows = [r["scores"] for r in rows if r["method"] == "prism"]
        if prism_rows:
            for key in ("cosy_auc", "random_cosy_auc"):
                vals = [s[key] for s in prism_rows if key in s]
                if vals:
                    by.setdefault("prism (best of k)", {}).setdefault(key, []).append(max(vals))
    out = {"methods": {m: {k: _mean(v) for k, v in d.items()} | {"n": max(map(len, d.values()))}
                       | {f"{k}_se": mean_se(_finite(v)) for k, v in d.items()}
                       | {f"{k}_n": len(_finite(v)) for k, v in d.items()}
                       for m, d in by.items()}}
    for m, d in out["methods"].items():
        items = [r["scores"] for rows in scored.values() for r in rows if r["method"] == m]
        d.update({f"{k}_vs_random": paired_difference(items, k, seed=seed) for k in PAIRED_SCORES
                  if any(k in s for s in items)})
    p = [v for v in poly.values() if v is not None]
    out["polysemanticity"] = {"mean": _mean(p), "random_labels": random_poly, "n": len(p)}
    return out


def _finite(v: list[float]) -> list[float]:
    return [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]


def _mean(v: list[float]) -> float:
    v = _finite(v)
    return float(np.mean(v)) if v else math.nan


def _llm_simulation(client: Any, corpus: Any, llm: dict[str, Any], seed: int) -> dict[str, dict[str, int]]:
    """delphi's simulation score with the LLM simulator for every LLM feature with a
    MaxAct description, and for the MaxAct description of another such feature
    (:func:`~saekit.interp.score.random_partners`) as its baseline, on the examples its
    detection and fuzzing scores used; written into ``llm["scores"]``. Returns the
    answer counts (``{"simulation": {...}}``). A server gone mid-way costs the scores
    not yet computed, with a warning."""
    maxact = {f: t for f, rows in llm["descriptions"].items() for m, t in rows if m == "maxact" and t}
    donors = score.random_partners(sorted(maxact), seed)
    feats, texts, on, off, tops = [], [], [], [], []
    for f in sorted(maxact):
        n = SIZES[int(llm["scores"].get(f, {}).get("llm_sizes_level", 0))].score_examples
        a, b = corpus.split(f, n)
        exs = ([corpus.example(i, f) for i in a], [corpus.example(i, f) for i in b])
        top = float(corpus.acts[:, corpus.row(f)].max())
        for prefix, text in (("", maxact[f]), ("random_", maxact.get(donors.get(f, -1)))):
            if text:
                feats.append((f, prefix))
                texts.append(text)
                on.append(exs[0])
                off.append(exs[1])
                tops.append(top)
    log = CallLog()
    try:
        res = simulation.llm_simulation(client, texts, on, off, tops, log=log)
    except LLMError as e:
        if not e.down:
            raise
        warnings.warn(f"LLM simulation stopped: {e}", RuntimeWarning, stacklevel=2)
        return log.as_dict()
    for (f, prefix), r in zip(feats, res, strict=True):
        llm["scores"].setdefault(f, {}).update({
            f"{prefix}llm_simulation": r.correlation, f"{prefix}llm_simulation_per_example": r.example_mean,
            f"{prefix}llm_simulation_parsed": r.n_simulated / r.n_examples if r.n_examples else math.nan})
    return log.as_dict()


def _example(e: Any) -> dict[str, Any]:
    return {"tokens": e.tokens, "acts": [round(a, 4) for a in e.acts], "max": e.max}


def _record(store: Any, f: int, vocab: list[str], offline: dict, scored: list[dict], clusters: list,
            poly: float | None) -> dict[str, Any]:
    r = store.row(f)
    edges, counts = store.histogram(f)
    top = store.text(store.examples(f, 20), vocab)
    return {
        "feature": f, "count": int(store.count()[r]), "frequency": float(store.frequency()[r]),
        "max": float(store.max()[r]), "mean": float(store.mean()[r]),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist(), "scale": "log10"},
        "examples": [_example(e) for e in top],
        "samples": [[_example(e) for e in store.text(dec[:5], vocab)] for dec in store.deciles(f)],
        "top_tokens": offline["top_tokens"], "logit_lens": offline["logit_lens"],
        "ngrams": offline["ngrams"], "keywords": offline["keywords"],
        "descriptions": scored or [{"method": "offline", "text": offline["text"], "scores": {}}],
        "clusters": [{"label": c.label, "size": len(c.examples), "mean_act": c.mean_act,
                      "examples": [_example(e) for e in store.text(c.examples[:5], vocab)]} for c in clusters],
        "polysemanticity": poly,
    }


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec["descriptions"][0]
    return {"feature": rec["feature"], "count": rec["count"], "frequency": rec["frequency"], "max": rec["max"],
            "description": d["text"], **{k: v for k, v in d["scores"].items()},
            "n_clusters": len(rec["clusters"]), "polysemanticity": rec["polysemanticity"]}


# --------------------------------------------------------------------------- CLI


def split_tokens(tokens: torch.Tensor, n_describe: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_describe`` windows to describe from, the rest to score on."""
    if not 0 < n_describe < len(tokens):
        raise ValueError(f"need windows both to describe ({n_describe}) and to score on "
                         f"({len(tokens) - n_describe}) from {len(tokens)}")
    return tokens[:n_describe], tokens[n_describe:]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``saekit interp``: flags generated from :class:`InterpJob`."""
    p = subparsers.add_parser("interp", help="describe and score a dictionary's features; write an HTML dashboard")
    add_config_arguments(p, InterpJob, positional={"dictionary": "DICT"}, exclude=("llm_budget_s",),
                         help={"llm": "LLM describers and scorers: auto = when SAEKIT_LLM_BASE_URL/MODEL are set"})
    p.add_argument("--llm-budget", type=float, default=None, metavar="SECONDS", dest="llm_budget",
                   help="wall seconds the LLM work may take: prompts are sized from the first feature's "
                        "timing and features that do not fit are skipped (counted); default: no limit")
    add_config_file_arguments(p)
    p.add_argument("--out", default="runs/interp", help="output directory (default runs/interp)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: the feature store "
                                                         "from where it stopped, LLM answers from their cache")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output directory")
    p.set_defaults(fn=run_cli)
    return p


def run_interp(config: InterpJob | str | Path | None, out: str | Path = "runs/interp",
               overrides: list[str] | None = None, *, resume: bool = False, overwrite: bool = False,
               progress: bool = True) -> Result:
    """The ``saekit interp`` job from Python (the command calls this): check the config
    (an :class:`InterpJob`, a TOML file of its fields, or None; then ``key=value``
    overrides) before any work, claim ``out`` (``resume`` continues an interrupted run
    there, ``overwrite`` replaces an earlier one), describe and score, save the result
    and dashboard in ``out`` and return it.

    >>> saekit.run_interp(None, "runs/interp", ["dictionary='checkpoints/demo-topk'",  # doctest: +SKIP
    ...                   "model='checkpoints/demo-lm'", "features='20'"])
    """
    job = load_config(config, overrides, cls=InterpJob)
    claim_output(out, overwrite=overwrite, resume=resume, what="feature description run", can_resume=True)
    cfg = InterpConfig(**{k: v for k, v in asdict(job).items() if k in InterpConfig.__dataclass_fields__})
    model = load_model(job.model, device=job.device)
    d = load_dictionary(job.dictionary, device=job.device)
    tokens = load_tokens(job.data, model, cfg.n_tokens + cfg.n_score_tokens, cfg.ctx_len, seed=cfg.seed)
    describe_tokens, score_tokens = split_tokens(tokens, math.ceil(cfg.n_tokens / cfg.ctx_len))
    res = interp(model, d, describe_tokens, score_tokens, out, cfg, name=str(job.dictionary),
                 dataset=str(job.data), progress=progress)
    res.save(out)
    return res


def run_cli(args: argparse.Namespace) -> int:
    budget = [f"llm_budget_s={args.llm_budget}"] if args.llm_budget is not None else []
    res = run_interp(args.config, args.out, given_overrides(InterpJob, args) + budget + args.set,
                     resume=args.resume, overwrite=args.overwrite)
    print(summary_table(res.summary))
    print(f"wrote {Path(args.out) / 'index.html'} (the feature dashboard: open it in a browser), interp.json, "
          "interp.csv, features.json, report.md")
    return 0


def _stat_cell(s: dict[str, Any], key: str) -> str:
    """One score of a method as ``mean ± SE (n=…)`` over features (:func:`saekit.report.stats.stat_text`;
    marked under its minimum n, ``—`` when absent)."""
    mean = s.get(key)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return EMPTY
    se = s.get(f"{key}_se")
    return stat_text(Stat(mean, se if se is not None and not math.isnan(se) else None, s.get(f"{key}_n", s["n"])))


def _gain(paired: dict[str, Any] | None) -> str:
    """A paired difference from the random control as ``difference [low, high]`` (``-`` when none)."""
    if not paired or "difference" not in paired:
        return EMPTY
    low, high = paired["ci95"]
    return f"{paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def summary_table(summary: dict[str, Any]) -> str:
    """The mean scores per method beside their random baselines, as a text table: each as
    mean ± standard error over features with its n, and the simulation scores' paired gain
    over the random control with its bootstrap 95% interval."""
    rows = []
    for m, s in summary["methods"].items():
        row = {"description": m, "CoSy AUC": _stat_cell(s, "cosy_auc"),
               "random CoSy AUC": _stat_cell(s, "random_cosy_auc"), "embedding AUROC": _stat_cell(s, "embedding_auroc"),
               "random emb. AUROC": _stat_cell(s, "random_embedding_auroc")}
        for key, name in (("simulation", "simulation r"), ("random_simulation", "random sim. r"),
                          ("llm_simulation", "LLM sim. r"), ("random_llm_simulation", "random LLM sim. r")):
            if any(key in v for v in summary["methods"].values()):
                row[name] = _stat_cell(s, key)
            if key in PAIRED_SCORES and any(f"{key}_vs_random" in v for v in summary["methods"].values()):
                row[name.replace(" r", " gain")] = _gain(s.get(f"{key}_vs_random"))
        rows.append(row)
    p = summary["polysemanticity"]
    mean = EMPTY if p["mean"] is None or math.isnan(p["mean"]) else f"{p['mean']:.3f}"
    rand = EMPTY if p["random_labels"] is None or math.isnan(p["random_labels"]) else f"{p['random_labels']:.3f}"
    text = (report.text_table(rows) + f"\nscores: mean ± SE over features (n); {LOW_N_NOTE}"
            f"\npolysemanticity (mean label cosine, PRISM): {mean} against {rand} for random labels "
            f"(n={p['n']} features)")
    if summary.get("llm_calls"):
        text += "\nLLM answers:\n" + report.text_table(calls_table(summary["llm_calls"]))
    work = summary.get("llm_work")
    if work:
        text += (f"\nLLM features: {work['features_done']} of {work['features_planned']} done, "
                 f"{work['features_skipped']} skipped by the time budget; {work['seconds']} s of LLM work")
    return text
