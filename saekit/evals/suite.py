"""One table for a dictionary: ``saekit eval suite --dictionaries D [D ...]``.

Runs, on one model and one text, the core metrics (FVU, L0, CE and KL recovered,
SAEBench's reconstruction metrics: :func:`saekit.metrics.spliced.evaluate`), sparse
probing, targeted probe perturbation, absorption, spurious correlation removal
(:mod:`saekit.evals.scr`, on its two text sources), sensitivity and steering, and gathers
their headlines into one row per dictionary, comparable across SAE kinds, SNMF,
transcoders and loaded checkpoints (a transcoder reads ``hook`` and is scored where it
writes; sensitivity and steering perturb the hook each dictionary writes, so they run
once per written hook). Each evaluator's own table is kept beside it
(``tables``), and the results are also written in SAEBench's result layout
(``saebench/{dictionary}_{eval}_eval_results.json``: ``eval_type_id``, ``eval_config``,
``eval_result_metrics``, ``eval_result_details``, ``sae_cfg_dict``, ...) so SAEBench's
plotting reads them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from saekit.data import load_tokens
from saekit.evals import evaluator
from saekit.evals.common import EvalConfig, EvalResult, load_dictionaries, settings
from saekit.evals.sparse_probing import Prepared, prepare
from saekit.formats import load_dictionary
from saekit.metrics.spliced import evaluate
from saekit.models import load_model

#: What the suite can run, in order.
PARTS = ("core", "sparse_probing", "tpp", "absorption", "scr", "sensitivity", "steering")
#: The parts that probe the planted concepts and share :func:`~saekit.evals.sparse_probing.prepare`.
CONCEPT_PARTS = ("sparse_probing", "tpp", "absorption")
#: SAEBench's ``eval_type_id`` of the parts it has.
SAEBENCH_IDS = {"core": "core", "sparse_probing": "sparse_probing", "tpp": "tpp", "absorption": "absorption_first_letter",
                "scr": "scr"}
#: The parts that read the dictionaries' hook (the others perturb the hook each one writes).
READING_PARTS = (*CONCEPT_PARTS, "scr")


@dataclass
class Config(EvalConfig):
    """Suite settings: the common fields, and which parts run."""

    hook: str = ""
    """Hook of the dictionaries (default: the first dictionary's); all must share it."""
    dictionaries: list[str] | None = None
    """Dictionaries to evaluate (paths or registry ids); at least one."""
    n_tokens: int = 16384
    parts: list[Literal["core", "sparse_probing", "tpp", "absorption", "scr", "sensitivity", "steering"]] = field(
        default_factory=lambda: list(PARTS))
    """Evaluations to run (sensitivity and steering are the slowest)."""


def _headline(part: str, summary: dict[str, Any], name: str) -> dict[str, Any]:
    """The numbers of ``part``'s summary that concern dictionary ``name``, prefixed by the part."""
    if part == "sparse_probing":
        keys = {f"{name}@1": "sparse_probing_top1", f"{name}@5": "sparse_probing_top5", "dense": "dense_probe"}
    elif part == "tpp":
        keys = {f"{name}@20": "tpp_top20", f"{name}/random@20": "tpp_top20_random"}
    elif part == "absorption":
        keys = {f"{name}/absorption": "absorption_rate", f"{name}/false_negatives": "absorption_false_negatives"}
    elif part == "scr":
        keys = {f"{name}@20": "scr_top20", f"{name}/random@20": "scr_top20_random"}
    else:
        return {f"{part}:{k}": v for k, v in summary.items()
                if name in k and (v is None or isinstance(v, (int, float)))}
    return {new: summary[old] for old, new in keys.items() if old in summary}


def saebench_json(part: str, name: str, dictionary: Any, cfg: dict[str, Any], summary: dict[str, Any],
                  rows: list[dict[str, Any]]) -> str:
    """One SAEBench result file (its ``EvalOutput`` layout) for ``part`` of ``name``."""
    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    doc = {"eval_type_id": SAEBENCH_IDS[part], "eval_config": cfg, "eval_id": f"saekit-{part}-{name}",
           "datetime_epoch_millis": int(time.time() * 1000),
           "eval_result_metrics": {"saekit": metrics},
           "eval_result_details": rows, "eval_result_unstructured": None,
           "sae_bench_commit_hash": None, "sae_lens_id": name, "sae_lens_release_id": "saekit",
           "sae_lens_version": None, "sae_cfg_dict": dictionary.saelens_config()}
    return json.dumps(doc, indent=2, default=str, allow_nan=False)


def run(cfg: Config, model: Any = None, progress: bool = False) -> EvalResult:
    """Every part of the suite on every dictionary (module docstring).

    Returns
    -------
    EvalResult named ``suite``: one row per dictionary (kind, width, k, and each part's
    headline numbers); ``tables`` holds each part's own rows (``core``, ``sparse_probing``,
    ...), ``data`` each part's summary, and ``pages`` the SAEBench JSON files.
    """
    if not cfg.dictionaries:
        raise ValueError("Config.dictionaries must name at least one dictionary")
    bad = [p for p in cfg.parts if p not in PARTS]
    if bad:
        raise ValueError(f"Config.parts: unknown part(s) {bad}; available: {list(PARTS)}")
    if model is None:
        model = load_model(cfg.model, device=cfg.device)
    specs = list(cfg.dictionaries)
    hook = cfg.hook or _hook_of(specs[0])
    dicts = load_dictionaries(specs, model, hook, transcoders="reads")
    rows = [{"dictionary": name, "kind": d.cfg.kind, "hook": hook, "hook_out": d.cfg.output_hook,
             "d_dict": d.cfg.d_dict, "k": d.cfg.k} for name, d in dicts]
    # Sensitivity and steering perturb the hook a dictionary writes along its decoder rows:
    # one run per written hook (a transcoder's output hook, the others' hook).
    writes: dict[str, list[Any]] = {}
    for spec, (_, d) in zip(specs, dicts, strict=True):
        writes.setdefault(d.cfg.output_hook or hook, []).append(spec)
    tables: dict[str, list[dict[str, Any]]] = {}
    data: dict[str, Any] = {}
    pages: dict[str, str] = {}
    prepared: Prepared | None = None
    common = dict(model=cfg.model, hook=hook, dictionaries=specs, data=cfg.data, ctx_len=cfg.ctx_len,
                  batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device)
    for part in cfg.parts:
        if part == "core":
            tokens = load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len, seed=cfg.seed)
            tables["core"] = [{"dictionary": name, **evaluate(model, d, tokens, cfg.batch_size)} for name, d in dicts]
            for row, core in zip(rows, tables["core"], strict=True):
                row.update({k: core[k] for k in ("fvu", "l0", "ce_recovered_zero", "kl_recovered_zero",
                                                 "ce_recovered_mean", "frac_dead") if k in core})
            for (name, d), core in zip(dicts, tables["core"], strict=True):
                pages[f"saebench/{name}_core_eval_results.json"] = saebench_json(
                    "core", name, d, {"n_tokens": cfg.n_tokens, "data": cfg.data}, core, [])
            continue
        mod = evaluator(part)
        fields = {f for f in mod.Config.__dataclass_fields__}
        concepts = part in CONCEPT_PARTS
        if part in READING_PARTS:
            sub = mod.Config(**{k: v for k, v in common.items() if k in fields}, n_tokens=cfg.n_tokens)
            if concepts:  # one harvest and one encoding per dictionary for all three
                prepared = prepared or prepare(sub, model, progress)
                results = [mod.run(sub, model=model, progress=progress, prepared=prepared)]
            else:
                results = [mod.run(sub, model=model, progress=progress)]
        else:
            results = [mod.run(mod.Config(**{k: v for k, v in {**common, "hook": h, "dictionaries": group}.items()
                                             if k in fields}), model=model, progress=progress)
                       for h, group in writes.items()]
        tables[part] = [r | ({"hook": res.config.get("hook")} if len(results) > 1 else {})
                        for res in results for r in res.rows]
        data[part] = results[0].summary if len(results) == 1 else {res.config.get("hook"): res.summary
                                                                   for res in results}
        for row, (name, d) in zip(rows, dicts, strict=True):
            for res in results:
                row.update(_headline(part, res.summary, name))
            if part in SAEBENCH_IDS:
                (res,) = results
                mine = [r for r in res.rows if name in str(r.get("dictionary", r.get("probe", "")))]
                pages[f"saebench/{name}_{part}_eval_results.json"] = saebench_json(
                    part, name, d, res.config, _headline(part, res.summary, name), mine)
    return EvalResult("suite", rows, {"dictionaries": len(rows), "parts": list(cfg.parts)},
                      settings(cfg), tables=tables, data=data, pages=pages)


def _hook_of(spec: Any) -> str:
    d = spec if hasattr(spec, "cfg") else load_dictionary(spec)
    if not d.cfg.hook:
        raise ValueError(f"dictionary {spec!r} records no hook; set Config.hook")
    return d.cfg.hook
