"""delphi's simulation scorer: predict a feature's activation on every token from its
description alone, and correlate the prediction with the truth.

The method (Bills et al. 2023, OpenAI's neuron-explainer; ported by EleutherAI's delphi
as its ``simulator`` scorer):

1. true activations are rescaled to integers 0–10 against the feature's maximum,
   ``floor(10 · a / max)`` (delphi's ``normalize_activations``); a non-activating
   example's are all 0;
2. a simulator, given only the description, predicts 0–10 for every token of each
   held-out example;
3. the score is the Pearson correlation between true and predicted values **pooled over
   every token of every example** (Bills' "all" score over top and random records;
   delphi's group ``-1`` over activating and non-activating examples). delphi also
   reports each example's own correlation; :class:`SimulationScore` carries their mean
   and the pooled correlation over the activating examples alone.

The examples are the ones the other held-out scores use
(:meth:`~saekit.interp.score.ScoringCorpus.split`): ``n`` activating chunks spread evenly
over the feature's activation range (delphi's decile-stratified test set) and ``n``
silent chunks (delphi's non-activating examples), never the windows the description
came from. The maximum of step 1 is the feature's maximum over the held-out chunks
(delphi's is its maximum over the cache the examples came from).

Two simulators:

- :func:`simulate_offline`, no LLM: the description is cut into terms
  (:func:`description_terms`: the ``tokens:``/``context:``/``promotes:`` parts of the
  offline template, or the phrases and content words of free text), and a token's
  prediction is ``10 · max over terms of weight · g(cos(token, term))`` with the MiniLM
  embedder the other offline scores use, ``g(c) = clip((c − 0.5)/0.5, 0, 1)`` (a token
  equal to a term, case aside, scores 1). It reads tokens one at a time, so it cannot
  follow a description of context ("after a comma ..."); a description naming nothing
  that occurs scores 0, and a random description (another feature's) scores near 0.
- :func:`simulate_llm`: the LLM gets delphi's prompt
  (:func:`~saekit.interp.prompts.simulation_messages`) and answers a list of 0–10
  integers, one per token.

Where saekit departs from delphi, and why:

- **No expected values.** delphi's default ("all at once") simulator reads, at each
  token, the LLM's log-probabilities of "0".."10" and takes their expected value. The
  OpenAI-compatible servers saekit targets often return no logprobs (``transformers
  serve``, the real server of saekit's tests, ignores ``logprobs``/``top_logprobs``;
  delphi's own API client, for OpenRouter, asks for none), and
  :class:`~saekit.interp.llm.LLMClient` keeps the answer text only. saekit therefore
  uses delphi's other mode (the JSON simulator: the model writes its integers, one
  prompt per example, after few-shot examples), in a compact form: a list of integers
  rather than a JSON echo of every token with its value, about a third as many tokens
  to write. Integer predictions tie more than expected values do, which lowers
  correlations somewhat.
- **Unreadable answers are left out, not scored as zeros.** delphi's JSON simulator
  predicts all zeros for an answer it cannot parse, which adds zeros to the pooled
  correlation. saekit leaves such an example out (``n_simulated < n_examples``) and
  counts the answer as ``unparseable`` in the run's :class:`~saekit.interp.answers.CallLog`
  under ``"simulation"``; an unreadable answer never counts as a pass or a fail.
- **A constant prediction scores 0, not NaN.** Pearson's r is undefined when the
  prediction never varies (``np.corrcoef`` gives NaN); a description under which the
  simulator predicts the same value everywhere explains none of the variance (R² = 0),
  and scoring it NaN would drop exactly the failing descriptions from the means. The
  score is NaN only when the truth is constant (nothing to predict).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from saekit.interp.answers import CallLog, log_to, outcome, strip_thinking
from saekit.interp.prism import embed
from saekit.interp.prompts import simulation_messages, tokens_and_acts

MAX_SIMULATED = 10
"""The top of the 0–10 scale of true and simulated activations."""
SIMILARITY_FLOOR = 0.5
"""MiniLM cosine at which the offline simulator starts to predict activation: unrelated
single words sit at 0.1–0.4 (``"Paris"``/``"the"`` 0.30), related ones above
(``"Monday"``/``"days of the week"`` 0.73, ``"Monday"``/``"Tuesday"`` 0.87)."""
SECTION_WEIGHTS = {"tokens": 1.0, "context": 0.25, "promotes": 0.25, "suppresses": 0.0}
"""Weight of a term by the part of the offline template it is in: the ``tokens`` are where
the feature fires; ``context`` words are near its activations (not on them) and
``promotes`` tokens what tends to follow, so each is weak evidence of firing on itself."""


class SimulationScore(NamedTuple):
    """The simulation score of one description of one feature."""

    correlation: float
    """Pearson r of true and simulated 0–10 activations pooled over every token of every
    simulated example, activating and non-activating (the headline score)."""
    activating_correlation: float
    """The same, pooled over the activating examples only."""
    example_mean: float
    """Mean over examples of each example's own correlation (examples whose truth is
    constant, such as every non-activating one, have none and are left out)."""
    n_simulated: int
    """Examples with a usable prediction (all of them offline)."""
    n_examples: int
    """Examples asked for."""
    n_tokens: int
    """Tokens in the simulated examples."""


def normalize_activations(acts: Sequence[float] | np.ndarray | Tensor, max_activation: float) -> np.ndarray:
    """delphi's 0–10 scale: ``floor(10 · a / max)``, clipped to 0–10 (a held-out
    activation above the maximum it is scaled by would pass 10); ``max`` at least 1e-3,
    as delphi."""
    a = np.asarray(acts, dtype=np.float64)
    if not math.isfinite(float(max_activation)):
        raise ValueError(f"max_activation must be a finite number, got {max_activation!r}")
    return np.clip(np.floor(a * MAX_SIMULATED / max(float(max_activation), 1e-3)), 0, MAX_SIMULATED)


def correlation(true: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> float:
    """Pearson r of two aligned arrays: NaN when ``true`` is constant (or empty), 0.0 when
    only ``predicted`` is (see the module docstring)."""
    t = np.asarray(true, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and predicted activations must align, got {t.size} and {p.size} values")
    if t.size < 2 or np.all(t == t[0]):
        return math.nan
    if np.all(p == p[0]):
        return 0.0
    t, p = t - t.mean(), p - p.mean()
    return float(np.clip((t @ p) / math.sqrt((t @ t) * (p @ p)), -1.0, 1.0))


def simulation_score(true: Sequence[Sequence[float]], predicted: Sequence[Sequence[float] | None],
                     activating: Sequence[bool] | None = None) -> SimulationScore:
    """Score simulated against true 0–10 activations (both already on the 0–10 scale,
    :func:`normalize_activations`), per example.

    Parameters
    ----------
    true
        Per example, the true activation of each token.
    predicted
        Per example, the simulated activation of each token, or ``None`` for an example
        without a usable prediction (left out).
    activating
        Per example, whether it is an activating one (default: whether its truth has a
        nonzero value).
    """
    if len(true) != len(predicted):
        raise ValueError(f"true and predicted must have one entry per example, got {len(true)} and {len(predicted)}")
    if activating is not None and len(activating) != len(true):
        raise ValueError(f"activating must have one flag per example, got {len(activating)} for {len(true)}")
    pairs = []
    for i, (t, p) in enumerate(zip(true, predicted, strict=True)):
        if p is None:
            continue
        t, p = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
        if t.shape != p.shape:
            raise ValueError(f"example {i}: {t.size} true activations but {p.size} simulated ones")
        pairs.append((t, p, bool(activating[i]) if activating is not None else bool(np.any(t > 0))))
    if not pairs:
        return SimulationScore(math.nan, math.nan, math.nan, 0, len(true), 0)
    pooled = correlation(np.concatenate([t for t, _, _ in pairs]), np.concatenate([p for _, p, _ in pairs]))
    on = [(t, p) for t, p, a in pairs if a]
    on_r = correlation(np.concatenate([t for t, _ in on]), np.concatenate([p for _, p in on])) if on else math.nan
    per = [correlation(t, p) for t, p, _ in pairs]
    per = [r for r in per if not math.isnan(r)]
    return SimulationScore(pooled, on_r, float(np.mean(per)) if per else math.nan, len(pairs), len(true),
                           int(sum(t.size for t, _, _ in pairs)))


# --------------------------------------------------------------------------- offline simulator

_SECTION = re.compile(r"^\s*(tokens|context|promotes|suppresses)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+")
# Function words, and the words descriptions use about features rather than about text:
# they name nothing the feature fires on, and would match everywhere.
_STOPWORDS = frozenset("""
a an the and or of in on at to for from by with as is are was were be been being it its this that these
those there their they them he she his her we our you your i not no but if then than so such into onto
over under about after before between within without up down out also very more most less least other
some any each every all both either neither one two which who whom whose what when where why how can
could may might will would shall should do does did has have had often usually typically especially
mainly mostly like similar related including include includes e.g. eg etc
feature features neuron fires fire firing activates activate activation activations token tokens word
words text texts mention mentions mentioned reference references referring refers phrase phrases
pattern patterns context contexts term terms concept concepts usage use used promotes suppresses
""".split())


def description_terms(text: str) -> list[tuple[str, float]]:
    """The terms the offline simulator looks for, each with its weight.

    The offline template (``tokens: X, Y | context: A, B | promotes: P``) gives its listed
    items, weighted by :data:`SECTION_WEIGHTS`; free text (an LLM's description) gives its
    comma-, semicolon- or ``|``-separated phrases of up to four words and their content
    words (not :data:`_STOPWORDS`), weight 1. Duplicates keep their largest weight.
    """
    terms: dict[str, float] = {}
    for part in str(text).split("|"):
        m = _SECTION.match(part)
        weight = SECTION_WEIGHTS[m.group(1).lower()] if m else 1.0
        body = part[m.end():] if m else part
        # The template joins its items with ", " (so a "," token is an item of its own);
        # free text is cut at any comma or semicolon, and its items lose their punctuation.
        for item in (body.strip().split(", ") if m else re.split(r"[,;]|\n", body)):
            item = item.strip() if m else item.strip().strip("\"'“”‘’`()[].:!?")
            if not item:
                continue
            words = _WORD.findall(item)
            candidates = ([item] if m or len(words) <= 4 else []) + ([] if m else
                                                                    [w for w in words if w.lower() not in _STOPWORDS])
            for term in candidates:
                if term.lower() in _STOPWORDS and not m:
                    continue
                terms[term] = max(weight, terms.get(term, 0.0))
    return [(t, w) for t, w in terms.items() if w > 0]


_TOKEN_EMBEDDINGS: dict[str, Tensor] = {}


def _embed_cached(texts: Sequence[str]) -> Tensor:
    """MiniLM embeddings of short strings, kept for the process (token strings recur
    across features, descriptions and runs)."""
    new = sorted({t for t in texts if t not in _TOKEN_EMBEDDINGS})
    if new:
        _TOKEN_EMBEDDINGS.update(zip(new, embed(new), strict=True))
    return torch.stack([_TOKEN_EMBEDDINGS[t] for t in texts]) if texts else torch.zeros(0, 384)


def token_predictions(descriptions: Sequence[str], token_texts: Sequence[str],
                      semantic: bool = True) -> np.ndarray:
    """The offline simulator's 0–10 prediction for each description and each distinct
    token string, ``[len(descriptions), len(token_texts)]``; see the module docstring.

    ``semantic=False`` keeps exact matches only (a token equal to a term, case and
    surrounding whitespace aside), which needs no embedder.
    """
    keys = [t.strip().lower() for t in token_texts]
    terms = [description_terms(d) for d in descriptions]
    out = np.zeros((len(descriptions), len(token_texts)))
    if semantic:
        pool = sorted({t for ts in terms for t, _ in ts})
        tok_emb = _embed_cached([k for k in keys])
        term_emb = _embed_cached(pool) if pool else torch.zeros(0, tok_emb.shape[1])
        cos = (tok_emb @ term_emb.T).numpy() if pool else np.zeros((len(keys), 0))
        at = {t: j for j, t in enumerate(pool)}
    for i, ts in enumerate(terms):
        if not ts:
            continue
        best = np.zeros(len(keys))
        for term, w in ts:
            exact = np.array([k == term.lower() and bool(k) for k in keys], dtype=np.float64)
            g = exact
            if semantic:
                g = np.maximum(exact, np.clip((cos[:, at[term]] - SIMILARITY_FLOOR) / (1 - SIMILARITY_FLOOR), 0, 1))
            best = np.maximum(best, w * g)
        out[i] = MAX_SIMULATED * best
    out[:, [not k for k in keys]] = 0.0  # whitespace-only tokens name nothing
    return out


def simulate_offline(descriptions: Sequence[str], examples: Sequence[Sequence[Any]],
                     semantic: bool = True) -> list[list[np.ndarray]]:
    """The offline simulator's predictions: ``descriptions[i]`` simulated on each of
    ``examples[i]`` (objects with ``.tokens``/``.acts`` or dicts), one 0–10 array per
    example."""
    if len(descriptions) != len(examples):
        raise ValueError(f"descriptions and examples must have one entry per description, got "
                         f"{len(descriptions)} and {len(examples)}")
    texts = sorted({t for exs in examples for ex in exs for t in tokens_and_acts(ex)[0]})
    col = {t: j for j, t in enumerate(texts)}
    pred = token_predictions(descriptions, texts, semantic) if texts else np.zeros((len(descriptions), 0))
    return [[pred[i, [col[t] for t in tokens_and_acts(ex)[0]]] for ex in exs] for i, exs in enumerate(examples)]


def corpus_simulation(corpus: Any, feature: int, descriptions: Sequence[str], n: int = 50,
                      semantic: bool = True) -> list[SimulationScore]:
    """The offline simulation score of each description of one feature on a
    :class:`~saekit.interp.score.ScoringCorpus`: ``n`` activating and ``n`` silent
    held-out chunks (:meth:`~saekit.interp.score.ScoringCorpus.split`), truth scaled by
    the feature's held-out maximum."""
    on, off = corpus.split(feature, n)
    idx = on + off
    if not idx:
        return [SimulationScore(math.nan, math.nan, math.nan, 0, 0, 0) for _ in descriptions]
    top = float(corpus.acts[:, corpus.row(feature)].max())
    examples = [corpus.example(i, feature) for i in idx]
    true = [normalize_activations(ex.acts, top) for ex in examples]
    flags = [True] * len(on) + [False] * len(off)
    preds = simulate_offline(list(descriptions), [examples] * len(descriptions), semantic)
    return [simulation_score(true, p, flags) for p in preds]



# --------------------------------------------------------------------------- LLM simulator

_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_LINE_END_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\W*$")
_JSON_ACTIVATION = re.compile(r"\"activation\"\s*:\s*(-?\d+(?:\.\d+)?|null)", re.IGNORECASE)


def _in_scale(values: Sequence[str]) -> list[float] | None:
    try:
        v = [float(x) for x in values]
    except ValueError:
        return None
    return v if all(0 <= x <= MAX_SIMULATED for x in v) else None


def _parse_activations(text: str, n: int) -> tuple[list[float] | None, bool]:
    """:func:`parse_activation_list`, and whether the answer was the asked-for list."""
    if not isinstance(text, str) or n < 1:
        return None, False
    text = strip_thinking(text)
    for inside in reversed(_BRACKETED.findall(text)):
        items = [x.strip().strip("'\"") for x in re.split(r"[,;\s]+", inside) if x.strip()]
        if len(items) == n:
            values = _in_scale(items)
            if values is not None:
                return values, True
    found = _JSON_ACTIVATION.findall(text)  # delphi's JSON simulator's answer form
    if len(found) == n:
        values = _in_scale(["0" if x.lower() == "null" else x for x in found])
        if values is not None:
            return values, False
    lines = [line for line in text.splitlines() if line.strip()]
    ends = [m.group(1) for m in (_LINE_END_NUMBER.search(line) for line in lines) if m]
    if len(ends) == n:  # the tokens echoed one per line, each with its value
        values = _in_scale(ends)
        if values is not None:
            return values, False
    for chunk in (text, lines[-1] if lines else ""):
        found = _NUMBER.findall(chunk)
        if len(found) == n:
            values = _in_scale(found)
            if values is not None:
                return values, False
    return None, False


def parse_activation_list(text: str, n: int) -> list[float] | None:
    """Exactly ``n`` activations 0–10 from a simulator's answer, or ``None``.

    Tries, in order: the last bracketed list of ``n`` numbers (``[0, 0, 7, 0]``); ``n``
    ``"activation": v`` entries (delphi's JSON form, ``null`` read as 0); ``n`` lines
    ending in a number (the tokens echoed with their values); ``n`` standalone numbers in
    the whole answer, then in its last line. Any value outside 0–10 rejects that form.
    """
    return _parse_activations(text, n)[0]


def activation_list_outcome(text: str, n: int) -> str:
    """:func:`~saekit.interp.answers.outcome` of a simulator's answer: ``parsed`` when it
    holds the asked-for bracketed list, ``salvaged`` when a fallback of
    :func:`parse_activation_list` reads it."""
    values, clean = _parse_activations(text, n)
    return outcome(text, values is not None, clean)


def simulate_llm(client: Any, descriptions: Sequence[str], examples: Sequence[Sequence[Any]], *,
                 temperature: float = 0.0, max_tokens: int | None = None,
                 log: CallLog | None = None) -> list[list[list[float] | None]]:
    """The LLM simulator's predictions: one request per (description, example), all in
    one ``chat_many`` batch with ``on_error="skip"``; ``None`` for an example whose answer
    failed or could not be read (:func:`parse_activation_list`). ``max_tokens`` defaults
    to 4 per token plus 16. Each answer's outcome is counted in ``log`` under
    ``"simulation"``."""
    if len(descriptions) != len(examples):
        raise ValueError(f"descriptions and examples must have one entry per description, got "
                         f"{len(descriptions)} and {len(examples)}")
    slots = [(i, tokens_and_acts(ex)[0]) for i, exs in enumerate(examples) for ex in exs]
    if not slots:
        return [[] for _ in descriptions]
    longest = max(len(toks) for _, toks in slots)
    answers = client.chat_many([simulation_messages(descriptions[i], toks) for i, toks in slots],
                               temperature=temperature, max_tokens=max_tokens or 4 * longest + 16,
                               on_error="skip")
    log_to(log, "simulation", [activation_list_outcome(a, len(t)) for (_, t), a in zip(slots, answers, strict=True)])
    out: list[list[list[float] | None]] = [[] for _ in descriptions]
    for (i, toks), a in zip(slots, answers, strict=True):
        out[i].append(parse_activation_list(a, len(toks)))
    return out


def llm_simulation(client: Any, descriptions: Sequence[str], activating: Sequence[Sequence[Any]],
                   non_activating: Sequence[Sequence[Any]], max_activation: Sequence[float] | None = None, *,
                   temperature: float = 0.0, max_tokens: int | None = None,
                   log: CallLog | None = None) -> list[SimulationScore]:
    """delphi's simulation score with the LLM simulator: ``descriptions[i]`` simulated on
    feature ``i``'s activating and non-activating examples.

    Parameters
    ----------
    client
        The :class:`~saekit.interp.llm.LLMClient`.
    descriptions
        One description per feature.
    activating, non_activating
        Per feature, held-out examples (``.tokens``/``.acts``) where it fires and where it
        does not (the latter's truth is all 0, as delphi).
    max_activation
        Per feature, the maximum the truth is scaled by (default: the largest activation
        among its examples).
    temperature, max_tokens, log
        As :func:`simulate_llm`.

    Returns
    -------
    list[SimulationScore]
        One per feature; examples without a usable answer are left out
        (``n_simulated``).
    """
    if not (len(descriptions) == len(activating) == len(non_activating)):
        raise ValueError(f"descriptions, activating and non_activating must have one entry per feature, got "
                         f"{len(descriptions)}, {len(activating)} and {len(non_activating)}")
    if max_activation is not None and len(max_activation) != len(descriptions):
        raise ValueError(f"max_activation must have one value per feature, got {len(max_activation)}")
    examples = [list(on) + list(off) for on, off in zip(activating, non_activating, strict=True)]
    preds = simulate_llm(client, descriptions, examples, temperature=temperature, max_tokens=max_tokens, log=log)
    out = []
    for f, (on, off) in enumerate(zip(activating, non_activating, strict=True)):
        acts = [tokens_and_acts(ex)[1] for ex in on]
        top = (max((max(a, default=0.0) for a in acts), default=0.0) if max_activation is None
               else float(max_activation[f]))
        true = [normalize_activations(a, top) for a in acts] + [np.zeros(len(tokens_and_acts(ex)[0])) for ex in off]
        out.append(simulation_score(true, preds[f], [True] * len(on) + [False] * len(off)))
    return out
