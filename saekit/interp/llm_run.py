"""The LLM part of ``saekit interp``, one feature at a time.

Per LLM feature (a *unit*, in :func:`run_llm`):

1. PRISM labels of its clusters (:func:`~saekit.interp.prompts.label_clusters`; a
   cluster whose label call fails or is unreadable keeps its offline label);
2. MaxAct and output-centric descriptions (:mod:`saekit.interp.prompts`);
3. its MaxAct description scored by detection and fuzzing
   (:mod:`saekit.interp.detection`), CoSy on LLM-written texts
   (:func:`~saekit.interp.score.llm_cosy`), and delphi's intruder score
   (:mod:`saekit.interp.intruder`), on held-out examples;
4. the same scores of a random description: the MaxAct description of another LLM
   feature (an earlier one, drawn with the run's seed; the first feature's comes after
   the loop, from a later one).

Failure isolation: every call goes out with ``on_error="skip"``. A call that still
fails after its retries, or is not sent because the time budget is spent, costs that
one label, description or score; a feature without a MaxAct description gets no LLM
scores; an unreadable answer is left out of a score, never counted as a pass. Each
answer's outcome is counted per call type (:class:`~saekit.interp.answers.CallLog`).
Only a configuration error (HTTP 401, 403, 404) raises. A server that fails
``max_consecutive_failures`` calls in a row is taken as gone: the LLM work stops there
(``work["stopped"]`` says why) and the run returns what it has.

Incremental writes: after each unit, ``{out}/llm_progress.json`` is rewritten
(atomically) with what is done: descriptions, scores, labels, the answer counts and the
budget's level. A killed run loses at most the unit in progress: its answers are in the
LLM cache, so a rerun (``--resume``) asks the server only what was never answered. A
rerun with the same settings reuses the recorded level, so its prompts, and cache keys,
are the first run's.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from saekit.fileio import atomic_write_text
from saekit.interp import detection, intruder, prompts, score
from saekit.interp.answers import OUTCOMES, CallLog
from saekit.interp.budget import SIZES, LLMBudget, Sizes
from saekit.interp.llm import LLMError
from saekit.report import json_safe
from saekit.schema import plural

PROGRESS_FILE = "llm_progress.json"


def run_llm(client: Any, model: Any, dictionary: Any, store: Any, corpus: Any, vocab: list[str],
            features: list[int], offline: dict[int, dict], clusters: dict[int, list], *,
            budget_s: float | None = None, seed: int = 0, out: str | Path | None = None,
            progress: bool = True) -> dict[str, Any]:
    """The LLM work of ``saekit interp`` for ``features``; see the module docstring.

    Parameters
    ----------
    client
        The :class:`~saekit.interp.llm.LLMClient`.
    model, dictionary, store, corpus, vocab
        The run's model, dictionary, feature store, held-out
        :class:`~saekit.interp.score.ScoringCorpus` and token strings.
    features
        The LLM features, in order (the most frequent first).
    offline
        The offline describers' record per feature (its ``logit_lens`` is used).
    clusters
        PRISM clusters per feature; the LLM's labels replace the offline ones in place.
    budget_s
        Wall seconds the LLM work may take (:class:`~saekit.interp.budget.LLMBudget`);
        None: no limit.
    seed
        Seed of the random-description donors and the scorers' draws.
    out
        Folder of ``llm_progress.json`` (None: nothing written).
    progress
        A progress bar over the features, with the time estimate.

    Returns
    -------
    dict
        ``descriptions`` ``{feature: [(method, text)]}`` (MaxAct and output-centric),
        ``scores`` ``{feature: {score: value}}`` (for the MaxAct row), ``calls`` (the
        answer counts, :meth:`CallLog.as_dict`) and ``work`` (the budget's record, the
        features done and the features skipped).
    """
    path = None if out is None else Path(out) / PROGRESS_FILE
    key = _plan_key(client, features, budget_s, seed)
    level, levels = _recorded(path, key)
    budget = LLMBudget(budget_s, client, level=level)
    log = CallLog()
    descriptions: dict[int, list[tuple[str, str]]] = {}
    scores: dict[int, dict[str, float]] = {}
    done: list[int] = []
    bar = tqdm(total=len(features), desc="LLM features", unit="feature", disable=not progress)
    stopped = None
    try:
        for i, f in enumerate(features):
            if not budget.fits():
                break
            f_level = levels.get(f, budget.level)  # a resumed feature keeps its prompts
            budget.begin(f_level)
            try:
                _unit(client, model, dictionary, store, corpus, vocab, f, offline[f], clusters.get(f, []),
                      SIZES[f_level], budget, done, descriptions, scores, seed, log)
            except LLMError as e:
                if not e.down:
                    raise
                stopped = str(e)  # the server is gone: keep what is done, ask nothing more
                descriptions.pop(f, None)
                scores.pop(f, None)
                warnings.warn(f"LLM work stopped after {plural(len(done), 'feature')}: {e}", RuntimeWarning, stacklevel=2)
                break
            scores[f]["llm_sizes_level"] = f_level
            budget.end()
            done.append(f)
            budget.plan(len(features) - i - 1)
            _write(path, key, budget, log, descriptions, scores, clusters, done)
            bar.update(1)
            bar.set_postfix_str(budget.describe())
        if stopped is None:
            try:
                _first_baseline(client, model, dictionary, corpus, done, descriptions, scores, seed, log)
            except LLMError as e:
                if not e.down:
                    raise
                stopped = str(e)
    finally:
        bar.close()
    skipped = [f for f in features if f not in done]
    _write(path, key, budget, log, descriptions, scores, clusters, done)
    work = {**budget.summary(), "features_planned": len(features), "features_done": len(done),
            "features_skipped": len(skipped), "skipped": skipped, "stopped": stopped}
    return {"descriptions": descriptions, "scores": scores, "calls": log.as_dict(), "work": work}


def _unit(client: Any, model: Any, dictionary: Any, store: Any, corpus: Any, vocab: list[str], f: int,
          offline: dict, clusters: list, sizes: Sizes, budget: LLMBudget, done: list[int],
          descriptions: dict, scores: dict, seed: int, log: CallLog) -> None:
    """One feature's LLM work (steps 1-4 of the module docstring), timed by ``budget``."""
    with budget.unit("describe"):
        _label(client, store, vocab, clusters, log)
        maxact, output = _describe(client, store, vocab, f, offline, sizes, log)
    descriptions[f] = [(m, t) for m, t in (("maxact", maxact), ("output", output)) if t]
    scores[f] = {}
    with budget.unit("score"):
        on, off = _examples(corpus, f, sizes.score_examples)
        if maxact:
            scores[f].update(_scores(client, model, dictionary, corpus, f, maxact, on, off, sizes, seed, "", log))
        scores[f].update(_intruder(client, on, off, sizes, seed, f, log))
        donor = _donor([g for g in done if _maxact(descriptions, g)], seed, f)
        if maxact and donor is not None:
            budget.note_baseline()
            scores[f].update(_scores(client, model, dictionary, corpus, f, _maxact(descriptions, donor),
                                     on, off, sizes, seed, "random_", log))


def _maxact(descriptions: dict[int, list[tuple[str, str]]], f: int) -> str:
    return next((t for m, t in descriptions.get(f, []) if m == "maxact"), "")


def _donor(candidates: list[int], seed: int, f: int) -> int | None:
    """Another feature whose description is ``f``'s random baseline (seeded per feature)."""
    return random.Random(f"donor:{seed}:{f}").choice(candidates) if candidates else None


def _label(client: Any, store: Any, vocab: list[str], clusters: list, log: CallLog) -> None:
    if not clusters:
        return
    labels = prompts.label_clusters(client, [store.text(c.examples, vocab) for c in clusters],
                                    on_error="skip", log=log)
    for j, label in enumerate(labels):
        if label:  # else the offline label stays
            clusters[j] = clusters[j]._replace(label=label)


def _describe(client: Any, store: Any, vocab: list[str], f: int, offline: dict, sizes: Sizes,
              log: CallLog) -> tuple[str, str]:
    deciles = [d for d in store.deciles(f) if d]
    per = max(1, math.ceil(sizes.explain_examples / max(len(deciles), 1)))
    examples = [e for dec in deciles for e in dec[:per]][:sizes.explain_examples]
    maxact = prompts.explain_maxact(client, [store.text(examples, vocab)], max_tokens=sizes.explain_tokens,
                                    on_error="skip", log=log)[0] if examples else ""
    lens = offline["logit_lens"]
    up, down = [t["token"] for t in lens["promoted"]], [t["token"] for t in lens["suppressed"]]
    output = prompts.explain_output(client, [up], [down], max_tokens=sizes.explain_tokens, on_error="skip",
                                    log=log)[0] if up or down else ""
    return maxact, output


def _examples(corpus: Any, f: int, n: int) -> tuple[list, list]:
    a, b = corpus.split(f, n)
    return [corpus.example(i, f) for i in a], [corpus.example(i, f) for i in b]


def _scores(client: Any, model: Any, dictionary: Any, corpus: Any, f: int, text: str, on: list, off: list,
            sizes: Sizes, seed: int, prefix: str, log: CallLog) -> dict[str, float]:
    """Detection, fuzzing and CoSy-on-text of one description for feature ``f``."""
    [det] = detection.detection(client, [text], [on], [off], seed=seed, max_tokens=sizes.score_tokens, log=log)
    [fuz] = detection.fuzzing(client, [text], [on], [off], seed=seed, max_tokens=sizes.score_tokens, log=log)
    [cos] = score.llm_cosy(client, model, dictionary, corpus, [f], [text], n_texts=sizes.cosy_texts,
                           max_tokens=sizes.cosy_tokens, retries=sizes.cosy_attempts - 1, salvage=True,
                           on_error="skip", log=log)
    return {f"{prefix}detection_balanced_accuracy": det["balanced_accuracy"],
            f"{prefix}detection_parsed": det["n_parsed"] / det["n_total"] if det["n_total"] else math.nan,
            f"{prefix}fuzzing_balanced_accuracy": fuz["balanced_accuracy"],
            f"{prefix}fuzzing_parsed": fuz["n_parsed"] / fuz["n_total"] if fuz["n_total"] else math.nan,
            f"{prefix}llm_cosy_auc": cos.auc, f"{prefix}llm_cosy_mad": cos.mad}


def _intruder(client: Any, on: list, off: list, sizes: Sizes, seed: int, f: int,
              log: CallLog) -> dict[str, float]:
    n_examples = 5
    if len(on) < n_examples - 1 or not off:
        return {}  # too few held-out examples for one trial
    [r] = intruder.intruder(client, [on], [off], n_examples=n_examples, n_trials=sizes.intruder_trials,
                            seed=seed + f, log=log)
    return {"intruder_accuracy": r["accuracy"], "intruder_chance": r["chance"]}


def _first_baseline(client: Any, model: Any, dictionary: Any, corpus: Any, done: list[int],
                    descriptions: dict, scores: dict, seed: int, log: CallLog) -> None:
    """The random baseline of the first described feature, which had no earlier donor."""
    have = [g for g in done if _maxact(descriptions, g)]
    if len(have) < 2 or "random_detection_balanced_accuracy" in scores[have[0]]:
        return
    f = have[0]
    donor = _donor(have[1:], seed, f)
    sizes = SIZES[int(scores[f].get("llm_sizes_level", 0))]
    on, off = _examples(corpus, f, sizes.score_examples)
    scores[f].update(_scores(client, model, dictionary, corpus, f, _maxact(descriptions, donor), on, off,
                             sizes, seed, "random_", log))


def _plan_key(client: Any, features: list[int], budget_s: float | None, seed: int) -> str:
    doc = json.dumps({"model": getattr(client, "model", None), "features": features, "budget_s": budget_s,
                      "seed": seed}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _recorded(path: Path | None, key: str) -> tuple[int | None, dict[int, int]]:
    """The level a killed run with the same settings had reached (None: none recorded),
    and the level of each feature it finished."""
    if path is None or not path.is_file():
        return None, {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("key") != key:
            return None, {}
        levels = {int(f): int(r["scores"]["llm_sizes_level"]) for f, r in doc["features"].items()}
        level = doc.get("level")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, {}  # damaged: plan afresh (the cache still answers what it holds)
    return (level if isinstance(level, int) and 0 <= level < len(SIZES) else None), levels


def _write(path: Path | None, key: str, budget: LLMBudget, log: CallLog, descriptions: dict, scores: dict,
           clusters: dict, done: list[int]) -> None:
    if path is None:
        return
    doc = {"key": key, "level": budget.level,
           "budget": budget.summary(), "calls": log.as_dict(), "done": done,
           "features": {str(f): {"descriptions": [{"method": m, "text": t} for m, t in descriptions.get(f, [])],
                                 "scores": scores.get(f, {}),
                                 "labels": [c.label for c in clusters.get(f, [])]} for f in done}}
    atomic_write_text(path, json.dumps(json_safe(doc), indent=1, ensure_ascii=False))


def calls_table(calls: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """The answer counts as tidy rows (one per call type), for the report."""
    return [{"call": kind, **{k: row.get(k, 0) for k in OUTCOMES}, "total": row.get("total", 0)}
            for kind, row in calls.items()]
