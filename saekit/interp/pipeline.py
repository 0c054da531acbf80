"""``saekit interp``: collect, describe, score and write the dashboard, for any dictionary.

The steps, each in its own module:

1. :func:`saekit.interp.store.collect` over the describing windows;
2. the offline describers (:mod:`saekit.interp.describe`) for the shown features, PRISM
   clusters (:mod:`saekit.interp.prism`) for the most frequent ``prism_features`` of them;
3. with an LLM endpoint configured (``SAEKIT_LLM_BASE_URL`` and ``SAEKIT_LLM_MODEL``, or
   ``llm="on"``): MaxAct and output-centric explanations and PRISM cluster labels for the
   first ``llm_features`` (:mod:`saekit.interp.prompts`), scored also by detection and
   fuzzing (:mod:`saekit.interp.detection`) and CoSy on LLM-written texts;
4. scores on a :class:`~saekit.interp.score.ScoringCorpus` of *other* windows (the tokens
   after the describing ones), each beside a random-description baseline;
5. the result (:class:`saekit.report.Result` named ``interp``) with the dashboard of
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saekit import report
from saekit.data import load_tokens
from saekit.formats import load_dictionary
from saekit.interp import describe, detection, intruder, prism, prompts, score
from saekit.interp.dashboard import render_dashboard
from saekit.interp.llm import ENV_BASE_URL, ENV_MODEL, client_from_config
from saekit.interp.prism import polysemanticity
from saekit.interp.store import collect, token_strings
from saekit.jobs import claim_output
from saekit.models import load_model
from saekit.report import Result


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
    llm: str = "auto"
    """"auto": use the LLM endpoint when the environment names one; "on": require it; "off"."""
    llm_features: int = 50
    """Features described and scored by the LLM."""
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.llm not in ("auto", "on", "off"):
            raise ValueError(f"llm must be 'auto', 'on' or 'off', got {self.llm!r}")
        for name in ("n_tokens", "n_score_tokens", "ctx_len", "top_k", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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
    """Run the whole auto-interp job (see the module docstring) and return its result; it
    writes no report (``result.save(dir)`` does). ``out``: where the feature store is cached
    (``out/store``, resumable; None keeps it in memory). ``client`` overrides ``cfg.llm``
    with a ready :class:`~saekit.interp.llm.LLMClient`.

    The result (named ``interp``): ``rows`` one per shown feature (its first description and
    scores), ``summary`` the mean scores per method beside their random baselines,
    ``config`` the :class:`InterpConfig` and the dictionary, and ``pages`` the feature
    dashboard (``index.html``, ``features.json`` with every record, ``features/NNNNN.html``).
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
    say(f"interp: {len(shown)} features shown of {dictionary.cfg.d_dict}; describing ...")
    offline = describe.describe(store, vocab, shown, model=model, dictionary=dictionary)
    alive = [f for f in shown if store.count()[store.row(f)] > 0]
    clusters = prism.clusters(store, alive[:cfg.prism_features], vocab, max_windows=cfg.prism_windows,
                              client=client, seed=cfg.seed, progress=progress)
    descriptions = {f: [("offline", offline[f]["text"])] + [("prism", c.label) for c in clusters.get(f, [])]
                    for f in alive}
    llm_feats = alive[:cfg.llm_features] if client is not None else []
    if llm_feats:
        say(f"interp: LLM explanations for {len(llm_feats)} features ({client.model})")
        decile_sets = [[e for dec in store.deciles(f) for e in dec[:4]] for f in llm_feats]
        maxact = prompts.explain_maxact(client, [store.text(ex, vocab) for ex in decile_sets])
        lens = [offline[f]["logit_lens"] for f in llm_feats]
        output = prompts.explain_output(client, [[t["token"] for t in lz["promoted"]] for lz in lens],
                                        [[t["token"] for t in lz["suppressed"]] for lz in lens])
        for f, a, o in zip(llm_feats, maxact, output, strict=True):
            descriptions[f] += [("maxact", a), ("output", o)]
    say("interp: scoring on held-out windows ...")
    corpus = score.scoring_corpus(model, dictionary, score_tokens, alive, vocab, batch_size=cfg.batch_size,
                                  seed=cfg.seed, progress=progress)
    scored = score.score_descriptions(corpus, descriptions, seed=cfg.seed)
    if llm_feats:
        _llm_scores(client, model, dictionary, corpus, llm_feats, scored, cfg.seed)
    pool = sorted({c.label for f in clusters for c in clusters[f]})
    embedded = dict(zip(pool, prism.embed(pool), strict=True))  # once, for labels and baseline
    poly = {f: prism.polysemanticity([c.label for c in clusters[f]], embedded) for f in clusters}
    records = [_record(store, f, vocab, offline[f], scored.get(f, []), clusters.get(f, []), poly.get(f))
               for f in shown]
    summary = summarize(scored, poly, _random_polysemanticity(clusters, embedded, cfg.seed))
    summary.update(n_tokens=store.n_tokens, n_score_chunks=len(corpus), n_shown=len(shown),
                   llm=getattr(client, "model", None), seconds=round(time.time() - t0, 1))
    meta = {"title": f"saekit interp: {name or dictionary.cfg.kind + '-' + str(dictionary.cfg.d_dict)} "
                     f"on {dictionary.cfg.hook}",
            "dictionary": name, "kind": dictionary.cfg.kind, "d_dict": dictionary.cfg.d_dict,
            "hook": dictionary.cfg.hook, "model": store.manifest["model"], "n_tokens": store.n_tokens,
            "n_features_shown": len(shown), "score_columns": ["cosy_auc", "embedding_auroc", "random_cosy_auc"],
            "notes": f"described on {store.n_tokens:,} tokens of {dataset or 'the given tokens'}; scored on "
                     f"{len(corpus)} held-out chunks of 32 tokens; random_* = another feature's description "
                     "scored on this feature"}
    config = {**asdict(cfg), "dictionary": name, "kind": dictionary.cfg.kind, "d_dict": dictionary.cfg.d_dict,
              "hook": dictionary.cfg.hook, "model": store.manifest["model"], "data": dataset}
    return Result("interp", [_row(r) for r in records], summary, config, title=meta["title"],
                  pages=render_dashboard(meta, records))


def _llm_scores(client: Any, model: Any, dictionary: Any, corpus: Any, feats: list[int],
                scored: dict[int, list[dict]], seed: int) -> None:
    """Detection, fuzzing and CoSy on LLM-written texts for the MaxAct explanations, and
    for a random feature's MaxAct explanation as the baseline; and delphi's intruder
    score, which needs no description (a score of the feature's examples, kept in the
    MaxAct row beside its chance level ``1 / n_examples``)."""
    text = {f: next(d["text"] for d in scored[f] if d["method"] == "maxact") for f in feats}
    partner = score.random_partners(feats, seed)
    pairs = [(f, text[f], "") for f in feats] + [(f, text[partner[f]], "random_") for f in feats if f in partner]
    on, off = [], []
    for f, _, _ in pairs:
        a, b = corpus.split(f, 10)
        on.append([corpus.example(i, f) for i in a])
        off.append([corpus.example(i, f) for i in b])
    descs = [t for _, t, _ in pairs]
    det = detection.detection(client, descs, on, off, seed=seed)
    fuz = detection.fuzzing(client, descs, on, off, seed=seed)
    cos = score.llm_cosy(client, model, dictionary, corpus, [f for f, _, _ in pairs], descs)
    odd = intruder.intruder(client, on[:len(feats)], off[:len(feats)], seed=seed)
    for f, r in zip(feats, odd, strict=True):
        row = next(x for x in scored[f] if x["method"] == "maxact")
        row["scores"].update({"intruder_accuracy": r["accuracy"], "intruder_chance": r["chance"]})
    for (f, _, prefix), d, z, c in zip(pairs, det, fuz, cos, strict=True):
        row = next(r for r in scored[f] if r["method"] == "maxact")
        row["scores"].update({f"{prefix}detection_balanced_accuracy": d["balanced_accuracy"],
                              f"{prefix}fuzzing_balanced_accuracy": z["balanced_accuracy"],
                              f"{prefix}llm_cosy_auc": c.auc, f"{prefix}llm_cosy_mad": c.mad})


def _random_polysemanticity(clusters: dict[int, list], embedded: dict[str, torch.Tensor],
                            seed: int) -> float | None:
    """PRISM's baseline: the polysemanticity of as many labels drawn from the whole pool."""
    pool = list(embedded)
    rng = np.random.default_rng(seed)
    vals = [polysemanticity(list(rng.choice(pool, len(c), replace=False)), embedded)
            for c in clusters.values() if len(c) >= 2 and len(pool) >= len(c)]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(scored: dict[int, list[dict]], poly: dict[int, float | None], random_poly: float | None) -> dict:
    """Mean of every score per method, the PRISM best-of-k and mean, with baselines."""
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
                       for m, d in by.items()}}
    p = [v for v in poly.values() if v is not None]
    out["polysemanticity"] = {"mean": _mean(p), "random_labels": random_poly, "n": len(p)}
    return out


def _mean(v: list[float]) -> float:
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else math.nan


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
    """Register ``saekit interp``."""
    p = subparsers.add_parser("interp", help="describe and score a dictionary's features; write an HTML dashboard")
    p.add_argument("dictionary", help="dictionary directory, registry id or hf:// path")
    p.add_argument("--model", required=True, help="native checkpoint dir, HF dir or HF name")
    p.add_argument("--data", default="demo", help="text source (default: the demo corpus)")
    p.add_argument("--n-tokens", type=int, default=InterpConfig.n_tokens, help="tokens to describe from")
    p.add_argument("--n-score-tokens", type=int, default=InterpConfig.n_score_tokens,
                   help="further tokens to score on (disjoint windows)")
    p.add_argument("--features", default=InterpConfig.features,
                   help="N most frequent (default 200), 'all', or a comma list of indices")
    p.add_argument("--prism-features", type=int, default=InterpConfig.prism_features)
    p.add_argument("--llm", choices=("auto", "on", "off"), default="auto",
                   help="LLM describers and scorers: auto = when SAEKIT_LLM_BASE_URL/MODEL are set")
    p.add_argument("--llm-features", type=int, default=InterpConfig.llm_features)
    p.add_argument("--ctx-len", type=int, default=InterpConfig.ctx_len)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    p.add_argument("--out", default="runs/interp", help="output directory (default runs/interp)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: the feature store "
                                                         "from where it stopped, LLM answers from their cache")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in the output directory")
    p.set_defaults(fn=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    claim_output(args.out, overwrite=args.overwrite, resume=args.resume, what="feature description run",
                 can_resume=True)
    cfg = InterpConfig(features=args.features, n_tokens=args.n_tokens, n_score_tokens=args.n_score_tokens,
                       ctx_len=args.ctx_len, prism_features=args.prism_features, llm=args.llm,
                       llm_features=args.llm_features, seed=args.seed)
    model = load_model(args.model, device=args.device)
    d = load_dictionary(args.dictionary, device=args.device)
    tokens = load_tokens(args.data, model, cfg.n_tokens + cfg.n_score_tokens, cfg.ctx_len, seed=cfg.seed)
    describe_tokens, score_tokens = split_tokens(tokens, math.ceil(cfg.n_tokens / cfg.ctx_len))
    res = interp(model, d, describe_tokens, score_tokens, args.out, cfg, name=str(args.dictionary),
                 dataset=str(args.data))
    out = res.save(args.out)
    print(summary_table(res.summary))
    print(f"wrote {out / 'index.html'} (the feature dashboard: open it in a browser), interp.json, interp.csv, "
          "features.json, report.md")
    return 0


def summary_table(summary: dict[str, Any]) -> str:
    """The mean scores per method beside their random baselines, as a text table."""
    rows = []
    for m, s in summary["methods"].items():
        rows.append({"description": m, "n": s.get("n"), "CoSy AUC": s.get("cosy_auc"),
                     "random CoSy AUC": s.get("random_cosy_auc"), "embedding AUROC": s.get("embedding_auroc"),
                     "random emb. AUROC": s.get("random_embedding_auroc")})
    p = summary["polysemanticity"]
    return (report.text_table(rows) + f"\npolysemanticity (mean label cosine, PRISM): {p['mean']:.3f} "
            f"against {p['random_labels'] or float('nan'):.3f} for random labels ({p['n']} features)")
