"""delphi's LLM scorers: :func:`detection` and :func:`fuzzing`.

Both ask the LLM, given a feature's description, to classify held-out examples (does
the feature fire here; are these marks where it fires) and return balanced accuracy,
precision, recall and F1 per feature. Prompts follow :mod:`saekit.interp.prompts`'
conventions (:data:`~saekit.interp.prompts.PROMPT_VERSION` in every system message, one
``chat_many`` batch per call) and are paraphrases written for saekit.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from typing import Any

from saekit.interp.answers import CallLog, log_to, outcome, strip_thinking
from saekit.interp.llm import LLMClient
from saekit.interp.prompts import (
    MAXACT_THRESHOLD,
    chat_messages,
    maxact_mask,
    numbered,
    one_line,
    render_marked,
    tokens_and_acts,
)

_BINARY_WORDS = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0}
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_NAMED_ANSWER = re.compile(r"\b(?:example|text)[\s_#]*(\d+)[\"'\s:=)\-–.]*\**\s*(yes|no|true|false|1|0)\b",
                           re.IGNORECASE)
_NUMBERED_ANSWER = re.compile(r"^\s*\(?#?(\d+)\s*[.):]\s*\**\s*(yes|no|true|false|1|0)\b",
                              re.IGNORECASE | re.MULTILINE)
_BARE_DIGIT = re.compile(r"(?<![\w.])[01](?![\w.])")
_BARE_WORD = re.compile(r"(?<![\w.])(?:yes|no|true|false)(?![\w.])", re.IGNORECASE)


def parse_binary_list(text: str, n: int) -> list[int] | None:
    """Exactly ``n`` 0/1 judgements from an answer, or ``None`` when they cannot be found.

    Tries, in order: the last bracketed list of ``n`` items that are all 0/1/yes/no/
    true/false (``[1, 0, 1]``, ``["yes", "no"]``); for one example, an answer that opens
    with its verdict (``No.``, ``Yes, because ...``); per-example answers covering exactly
    examples 1..n (``Example 1: yes``, ``example_2: 0``, ``3. no``; a later answer for
    the same example wins); ``n`` standalone 0/1 digits in the whole answer, then in
    its last line (``1 0 1``); ``n`` yes/no words in the last line.
    """
    return _parse_binary(text, n)[0]


def binary_outcome(text: str, n: int) -> str:
    """:func:`~saekit.interp.answers.outcome` of a 0/1 answer: ``parsed`` when it is the
    asked-for bracketed list (for one example: starts with yes/no/0/1), ``salvaged`` when
    a fallback of :func:`parse_binary_list` reads it."""
    values, clean = _parse_binary(text, n)
    return outcome(text, values is not None, clean)


# A one-example answer that opens with its verdict ("No.", "Yes, because ..."); a digit
# followed by "." or ")" is numbering, not a verdict.
_FIRST_WORD = re.compile(r"^[\W_]*(?:(yes|no|true|false)\b|([01])(?![\w.)]))", re.IGNORECASE)


def _parse_binary(text: str, n: int) -> tuple[list[int] | None, bool]:
    """:func:`parse_binary_list`, and whether the answer was in the asked-for form."""
    if not isinstance(text, str) or n < 1:
        return None, False
    text = strip_thinking(text)
    for inside in reversed(_BRACKETED.findall(text)):
        items = [x.strip().strip("'\"").lower() for x in re.split(r"[,;\s]+", inside) if x.strip()]
        if len(items) == n and all(x in _BINARY_WORDS for x in items):
            return [_BINARY_WORDS[x] for x in items], True
    if n == 1:
        first = _FIRST_WORD.match(text.strip())
        if first:
            return [_BINARY_WORDS[(first.group(1) or first.group(2)).lower()]], True
    return _fallback_binary(text, n), False


def _fallback_binary(text: str, n: int) -> list[int] | None:
    named = {int(k): _BINARY_WORDS[v.lower()]
             for pattern in (_NUMBERED_ANSWER, _NAMED_ANSWER) for k, v in pattern.findall(text)}
    if named and sorted(named) == list(range(1, n + 1)):
        return [named[k] for k in range(1, n + 1)]
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    for chunk, pattern in ((text, _BARE_DIGIT), (last, _BARE_DIGIT), (last, _BARE_WORD)):
        found = pattern.findall(chunk)
        if len(found) == n:
            return [_BINARY_WORDS[x.lower()] for x in found]
    return None


def classification_metrics(labels: Sequence[int], predictions: Sequence[int | None]) -> dict[str, float]:
    """Balanced accuracy, accuracy, precision, recall and F1 of 0/1 predictions.

    ``None`` predictions (unparseable answers) are left out rather than counted as wrong;
    ``n_parsed`` and ``n_total`` say how many there were. Balanced accuracy is NaN when
    the parsed examples lack a class; precision is 0 when nothing was predicted positive
    (as scikit-learn); every rate is NaN when nothing was parsed.
    """
    pairs = [(int(y), int(p)) for y, p in zip(labels, predictions, strict=True) if p is not None]
    tp = sum(1 for y, p in pairs if y == 1 and p == 1)
    fp = sum(1 for y, p in pairs if y == 0 and p == 1)
    tn = sum(1 for y, p in pairs if y == 0 and p == 0)
    fn = sum(1 for y, p in pairs if y == 1 and p == 0)
    nan = float("nan")
    recall = tp / (tp + fn) if tp + fn else nan
    specificity = tn / (tn + fp) if tn + fp else nan
    if pairs:
        precision = tp / (tp + fp) if tp + fp else 0.0
        r = 0.0 if math.isnan(recall) else recall
        f1 = 2 * precision * r / (precision + r) if precision + r else 0.0
        accuracy = (tp + tn) / len(pairs)
    else:
        precision = f1 = accuracy = nan
    return {"balanced_accuracy": (recall + specificity) / 2, "accuracy": accuracy,
            "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n_parsed": len(pairs), "n_total": len(labels)}


def _check_scoring_input(descriptions: Sequence[str], activating: Sequence[Sequence[Any]],
                         non_activating: Sequence[Sequence[Any]], per_prompt: int) -> None:
    if not (len(descriptions) == len(activating) == len(non_activating)):
        raise ValueError(f"descriptions, activating and non_activating must have one entry per feature, got "
                         f"{len(descriptions)}, {len(activating)} and {len(non_activating)}")
    if not isinstance(per_prompt, int) or per_prompt < 1:
        raise ValueError(f"per_prompt must be a positive integer, got {per_prompt!r}")


def _classify(client: LLMClient, system: str, descriptions: Sequence[str],
              items: Sequence[list[tuple[str, int]]], per_prompt: int, temperature: float,
              max_tokens: int, question: str, kind: str, log: CallLog | None) -> list[dict[str, float]]:
    """Send each feature's (text, label) items in prompts of ``per_prompt`` and score;
    ``question`` asks about one text when a list answer was unreadable. Every answer's
    outcome counts in ``log`` under ``kind``: an unreadable list answer as unparseable,
    and each of its one-example re-asks on its own."""
    requests, slots = [], []
    for f, (description, feature_items) in enumerate(zip(descriptions, items, strict=True)):
        for start in range(0, len(feature_items), per_prompt):
            chunk = feature_items[start:start + per_prompt]
            user = (f"Description: {description}\n\n{numbered([t for t, _ in chunk], 'Example')}\n\n"
                    f"Answer with a list of {len(chunk)} values, 0 or 1, one per example in order.")
            requests.append(chat_messages(system, user))
            slots.append((f, [y for _, y in chunk]))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens, on_error="skip")
    parsed = [parse_binary_list(a, len(ys)) for (_, ys), a in zip(slots, answers, strict=True)]
    log_to(log, kind, [binary_outcome(a, len(ys)) for (_, ys), a in zip(slots, answers, strict=True)])
    # Small models often answer a list prompt with prose or an echo of the examples, yet
    # answer one yes/no question: the examples of an unreadable multi-example answer are
    # asked again one at a time (cached like every call; counted in n_retried).
    retry = [(j, i) for j, (p, (_, ys)) in enumerate(zip(parsed, slots, strict=True))
             if p is None and len(ys) > 1 and answers[j] for i in range(len(ys))]  # "": a failed call
    if retry:
        texts = [[t for t, _ in chunk] for chunk in _chunks(items, per_prompt)]
        singles = client.chat_many([chat_messages(system, (
            f"Description: {descriptions[slots[j][0]]}\n\nText: {one_line(texts[j][i])}\n\n"
            f"{question} Answer yes or no.")) for j, i in retry],
            temperature=temperature, max_tokens=max_tokens, on_error="skip")
        log_to(log, kind, [binary_outcome(a, 1) for a in singles])
        for j in {j for j, _ in retry}:
            parsed[j] = [None] * len(slots[j][1])
        for (j, i), answer in zip(retry, singles, strict=True):
            one = parse_binary_list(answer, 1)
            parsed[j][i] = one[0] if one is not None else None
    labels: list[list[int]] = [[] for _ in descriptions]
    predictions: list[list[int | None]] = [[] for _ in descriptions]
    retried = [0 for _ in descriptions]
    for j, ((f, ys), p) in enumerate(zip(slots, parsed, strict=True)):
        labels[f] += ys
        predictions[f] += p if p is not None else [None] * len(ys)
        retried[f] += sum(jj == j for jj, _ in retry)
    return [{**classification_metrics(y, p), "n_retried": r}
            for y, p, r in zip(labels, predictions, retried, strict=True)]


def _chunks(items: Sequence[list[tuple[str, int]]], per_prompt: int) -> list[list[tuple[str, int]]]:
    """The prompts' example chunks, in the order :func:`_classify` sends them."""
    return [feature_items[start:start + per_prompt] for feature_items in items
            for start in range(0, len(feature_items), per_prompt)]


_DETECTION_SYSTEM = (
    "You test a description of a language-model feature. You get the description of what "
    "makes the feature fire and numbered text examples. For each example, decide whether "
    "the feature fires anywhere in it according to the description (1) or not (0). Reply "
    "with a list of 0s and 1s, one per example in order, such as [0, 1, 0], and nothing else.")


def detection(client: LLMClient, descriptions: Sequence[str], activating: Sequence[Sequence[Any]],
              non_activating: Sequence[Sequence[Any]], per_prompt: int = 5, seed: int = 0, *,
              temperature: float = 0.0, max_tokens: int = 200, log: CallLog | None = None) -> list[dict[str, float]]:
    """delphi's detection score: can the LLM tell, from the description alone, which
    (unmarked) examples make the feature fire?

    Each feature's activating (label 1) and non-activating (label 0) examples are shuffled
    (seeded per feature) and sent ``per_prompt`` to a prompt; the LLM answers one 0/1 per
    example. An answer that :func:`parse_binary_list` cannot read counts its examples as
    missing, not as wrong: they drop out of the metrics and ``n_parsed`` falls below
    ``n_total``.

    Parameters
    ----------
    client
        The LLM.
    descriptions
        One description per feature.
    activating, non_activating
        Per feature, held-out examples where it fires and where it does not.
    per_prompt
        Examples per request (delphi's pipeline: 5).
    seed
        Seed of the shuffle.
    temperature, max_tokens
        Sampling parameters of the requests.
    log
        Counts each answer's outcome (:func:`binary_outcome`) under ``"detection"``.

    Returns
    -------
    list[dict]
        Per feature, :func:`classification_metrics`: ``balanced_accuracy``, ``accuracy``,
        ``precision``, ``recall``, ``f1``, the confusion counts ``tp``/``fp``/``tn``/``fn``,
        ``n_parsed`` and ``n_total``.
    """
    _check_scoring_input(descriptions, activating, non_activating, per_prompt)
    items = []
    for f, (pos, neg) in enumerate(zip(activating, non_activating, strict=True)):
        rng = random.Random(f"detection:{seed}:{f}")
        feature_items = ([("".join(tokens_and_acts(ex)[0]), 1) for ex in pos]
                         + [("".join(tokens_and_acts(ex)[0]), 0) for ex in neg])
        rng.shuffle(feature_items)
        items.append(feature_items)
    return _classify(client, _DETECTION_SYSTEM, descriptions, items, per_prompt, temperature, max_tokens,
                     "Does the description fit this text?", "detection", log)


_FUZZING_SYSTEM = (
    "You test a description of a language-model feature. You get the description and "
    "numbered text examples in which some tokens are wrapped in << and >>. For each example, "
    "decide whether the marked tokens are the ones the description would pick out, so the "
    "marking fits the description (1), or whether the marks look misplaced (0). Reply with "
    "a list of 0s and 1s, one per example in order, such as [0, 1, 0], and nothing else.")


def fuzzing(client: LLMClient, descriptions: Sequence[str], activating: Sequence[Sequence[Any]],
            non_activating: Sequence[Sequence[Any]], per_prompt: int = 5, seed: int = 0, *,
            threshold: float = MAXACT_THRESHOLD, temperature: float = 0.0,
            max_tokens: int = 200, log: CallLog | None = None) -> list[dict[str, float]]:
    """delphi's fuzzing score: can the LLM tell correctly marked examples from randomly
    marked ones, given the description?

    Activating examples (label 1) are marked where they fire (at least ``threshold`` times
    the example's maximum, :func:`mark_example`); each non-activating example (label 0)
    gets marks on ``ceil(mean number of marked tokens)`` random tokens (at least one;
    seeded per feature). Examples are shuffled and sent ``per_prompt`` to a prompt; the
    LLM answers, per example, whether the marks fit the description. Unparseable answers
    count as missing, not as wrong (see :func:`detection`).

    Parameters and returns as :func:`detection`, plus ``threshold``; ``log`` counts
    under ``"fuzzing"``.
    """
    _check_scoring_input(descriptions, activating, non_activating, per_prompt)
    items = []
    for f, (pos, neg) in enumerate(zip(activating, non_activating, strict=True)):
        rng = random.Random(f"fuzzing:{seed}:{f}")
        feature_items: list[tuple[str, int]] = []
        marked_counts = []
        for ex in pos:
            tokens, acts = tokens_and_acts(ex)
            mask = maxact_mask(acts, threshold, None)
            marked_counts.append(sum(mask))
            feature_items.append((render_marked(tokens, mask, "<<", ">>"), 1))
        n_marks = max(1, math.ceil(sum(marked_counts) / len(marked_counts))) if marked_counts else 1
        for ex in neg:
            tokens, _ = tokens_and_acts(ex)
            chosen = set(rng.sample(range(len(tokens)), min(n_marks, len(tokens))))
            feature_items.append((render_marked(tokens, [i in chosen for i in range(len(tokens))], "<<", ">>"), 0))
        rng.shuffle(feature_items)
        items.append(feature_items)
    return _classify(client, _FUZZING_SYSTEM, descriptions, items, per_prompt, temperature, max_tokens,
                     "Do the tokens marked with << and >> fit the description?", "fuzzing", log)
