"""LLM describers and scorers of auto-interp: prompt builders, tolerant parsers, client calls.

Every function here takes an :class:`~saekit.interp.llm.LLMClient` and sends its requests
as one batch through :meth:`~saekit.interp.llm.LLMClient.chat_many` (bounded concurrency,
retries, on-disk cache), at temperature 0 unless told otherwise.

Describers (one text per feature or cluster):

- :func:`explain_maxact`: delphi's MaxAct explainer, from ``<<marked>>`` windows;
- :func:`label_clusters`: PRISM's label of one cluster of ``[bracketed]`` texts;
- :func:`explain_output`: the output-centric VocabProj description, from the tokens a
  feature promotes and suppresses (works for dead features);
- :func:`generate_concept_texts`: the texts CoSy-for-text (PRISM's evaluation) runs the
  model on, written from a description.

Scorers (delphi): :func:`detection` and :func:`fuzzing`, both returning balanced accuracy,
precision, recall and F1 per feature.

Examples are any objects with ``.tokens`` (decoded token strings, leading spaces kept) and
``.acts`` (the feature's activation on each token), such as
``saekit.interp.store.TextExample``, or dicts with those keys.

The prompts are paraphrases written for saekit, not the original projects' text.
:data:`PROMPT_VERSION` opens every system message, so editing a prompt (and bumping the
version) changes every cache key and no stale answer is reused.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from typing import Any

from saekit.interp.llm import LLMClient, LLMError

#: Goes into every request (system message); bump it whenever a prompt below changes.
PROMPT_VERSION = "saekit-prompts/1"

MAXACT_THRESHOLD = 0.3
"""delphi marks tokens at or above this fraction of the maximum activation."""


# --------------------------------------------------------------------------- examples


def _tokens_acts(ex: Any) -> tuple[list[str], list[float]]:
    if isinstance(ex, dict):
        tokens, acts = ex["tokens"], ex["acts"]
    else:
        tokens, acts = ex.tokens, ex.acts
    tokens, acts = [str(t) for t in tokens], [float(a) for a in acts]
    if len(tokens) != len(acts):
        raise ValueError(f"an example has {len(tokens)} tokens but {len(acts)} activations; "
                         "expected one activation per token")
    return tokens, acts


def _render(tokens: Sequence[str], mask: Sequence[bool], open: str, close: str) -> str:
    """Join tokens, wrapping each maximal run of masked tokens in the markers.

    A run's leading and trailing whitespace stays outside the markers (``On <<Monday>>``,
    not ``On<< Monday>>``), which reads as the text it is.
    """
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        if not mask[i]:
            out.append(tokens[i])
            i += 1
            continue
        j = i
        while j < n and mask[j]:
            j += 1
        run = "".join(tokens[i:j])
        body = run.strip()
        if body:
            lead, trail = run[: len(run) - len(run.lstrip())], run[len(run.rstrip()):]
            out.append(f"{lead}{open}{body}{close}{trail}")
        else:  # a whitespace-only run still shows where the feature fired
            out.append(f"{open}{run}{close}")
        i = j
    return "".join(out)


def _one_line(text: str) -> str:
    # Examples are laid out one per line ("Example 3: ..."); a raw newline inside one
    # would split it in two for the model.
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def _maxact_mask(acts: Sequence[float], threshold: float, max_act: float | None) -> list[bool]:
    top = max(acts, default=0.0) if max_act is None else float(max_act)
    if not top > 0:
        return [False] * len(acts)
    return [a > 0 and a >= threshold * top for a in acts]


def mark_example(ex: Any, threshold: float = MAXACT_THRESHOLD, max_act: float | None = None,
                 open: str = "<<", close: str = ">>") -> str:
    """The text of an example with delphi's highlighting.

    Tokens are joined as they are; each maximal run of tokens whose activation is at
    least ``threshold * max_act`` (and positive) is wrapped in ``open``/``close``, with
    the run's surrounding whitespace left outside the markers.

    Parameters
    ----------
    ex
        An example (``.tokens``, ``.acts``, or a dict with those keys).
    threshold
        Fraction of the maximum a token must reach to be marked (delphi: 0.3).
    max_act
        The maximum to mark against; ``None`` takes the example's own maximum. Pass the
        feature's maximum to mark relative to it (weak examples then get few marks or none).
    open, close
        The markers.

    Returns
    -------
    str
        The marked text.
    """
    tokens, acts = _tokens_acts(ex)
    return _render(tokens, _maxact_mask(acts, threshold, max_act), open, close)


def highlight_percentile(ex: Any, percentile: float = 90.0, open: str = "[", close: str = "]") -> str:
    """The text of an example with PRISM's highlighting: tokens at or above the text's own
    ``percentile``-th activation percentile and above 0 are wrapped in ``[ ]``.

    At-or-above (PRISM writes "above") so that a text whose firing tokens all tie, or
    a text that fires everywhere, still shows its spans.
    """
    import numpy as np

    tokens, acts = _tokens_acts(ex)
    if not acts:
        return ""
    cut = float(np.percentile(np.asarray(acts, dtype=np.float64), percentile))
    return _render(tokens, [a > 0 and a >= cut for a in acts], open, close)


def _numbered(texts: Sequence[str], name: str) -> str:
    return "\n".join(f"{name} {i}: {_one_line(t)}" for i, t in enumerate(texts, 1))


def _messages(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"[{PROMPT_VERSION}] {system}"},
            {"role": "user", "content": user}]


# --------------------------------------------------------------------------- parsers

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_EXPLANATION_TAG = re.compile(r"\[\s*explanation\s*\]\s*:?|\bexplanation\s*:", re.IGNORECASE)
_LABEL_TAG = re.compile(r"\b(?:label|concept)\s*:", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def _strip_thinking(text: str) -> str:
    """The answer without reasoning models' ``<think>...</think>`` blocks."""
    return _THINK.sub("", text or "")


def _clean(text: str) -> str:
    text = " ".join(text.split()).strip("*_ ")
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def parse_explanation(text: str) -> str:
    """The description in an explainer's answer: the text after the last
    ``[EXPLANATION]:`` (any case, markdown around it allowed), whitespace collapsed; the
    whole answer, cleaned, when the tag is missing or nothing follows it."""
    text = _strip_thinking(text)
    tags = list(_EXPLANATION_TAG.finditer(text))
    if tags:
        after = _clean(text[tags[-1].end():])
        if after:
            return after
        text = _EXPLANATION_TAG.sub(" ", text)
    return _clean(text)


def parse_label(text: str) -> str:
    """A short label from an answer: after the last ``Label:``/``Concept:`` if present,
    else the last non-empty line; quotes, markdown and a final period removed."""
    text = _strip_thinking(text)
    tags = list(_LABEL_TAG.finditer(text))
    if tags and text[tags[-1].end():].strip():
        text = text[tags[-1].end():].strip().splitlines()[0]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    label = _clean(text.lstrip("-•* "))
    return label[:-1].rstrip() if label.endswith(".") else label


_ITEM_PREFIX = re.compile(
    r"^(?:[-*•·]\s+"                                     # bullets
    r"|\**\(?(?:(?:text|example)\s*)?#?\d{1,3}\s*[.):\]]\**(?=\s|$)\s*"  # 1. 1) (1) Text 1:
    r")", re.IGNORECASE)


def parse_lines(text: str) -> list[str]:
    """The items of a one-per-line answer.

    Drops empty lines, code fences, horizontal rules and leading preamble lines that end
    in ``:`` ("Here are the texts:"); strips bullets (``-``, ``*``, ``•``), numbering
    (``1.``, ``2)``, ``(3)``, ``Text 4:``, ``**5.**``) and quotes around a whole item.
    A number that starts a sentence ("3.5 million ...", "1990 was ...") is kept.
    """
    items = []
    for raw in _strip_thinking(text).splitlines():
        line = raw.strip()
        if not line or line.startswith("```") or set(line) <= set("-*_=# "):
            continue
        if not items and line.endswith(":"):
            continue  # a preamble before the first item
        line = _clean(_ITEM_PREFIX.sub("", line, count=1))
        if line:
            items.append(line)
    return items


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
    true/false (``[1, 0, 1]``, ``["yes", "no"]``); per-example answers covering exactly
    examples 1..n (``Example 1: yes``, ``example_2: 0``, ``3. no``; a later answer for
    the same example wins); ``n`` standalone 0/1 digits in the whole answer, then in
    its last line (``1 0 1``); ``n`` yes/no words in the last line.
    """
    if not isinstance(text, str) or n < 1:
        return None
    text = _strip_thinking(text)
    for inside in reversed(_BRACKETED.findall(text)):
        items = [x.strip().strip("'\"").lower() for x in re.split(r"[,;\s]+", inside) if x.strip()]
        if len(items) == n and all(x in _BINARY_WORDS for x in items):
            return [_BINARY_WORDS[x] for x in items]
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


# --------------------------------------------------------------------------- describers

_MAXACT_SYSTEM = (
    "You are an interpretability researcher describing one feature of a language model. "
    "Each example below is a short window of text; the tokens where the feature is most "
    "active are wrapped in << and >>. Work out what the marked tokens and their context "
    "have in common and describe that shared pattern concisely: say whether it is about "
    "the marked tokens themselves, the context around them, or what tends to come next. "
    "Do not list the marked tokens one by one, and do not mention the << >> markers or "
    "the examples themselves. You may think briefly first; end with one line that starts "
    "with [EXPLANATION]: followed by your description.")


def explain_maxact(client: LLMClient, examples: Sequence[Sequence[Any]], *,
                   threshold: float = MAXACT_THRESHOLD, temperature: float = 0.0,
                   max_tokens: int = 512) -> list[str]:
    """delphi's MaxAct explanation of each feature from its marked examples.

    Parameters
    ----------
    client
        The LLM.
    examples
        Per feature, its examples (delphi: 40 spread evenly over the activation deciles).
        Each is marked against its own maximum, so low-decile examples show where they fire.
    threshold
        Marking threshold as a fraction of the example's maximum.
    temperature, max_tokens
        Sampling parameters of the requests.

    Returns
    -------
    list[str]
        One description per feature (:func:`parse_explanation` of the answer).
    """
    requests = []
    for f, exs in enumerate(examples):
        if not exs:
            raise ValueError(f"feature {f} (position in examples) has no examples to explain")
        texts = [mark_example(ex, threshold) for ex in exs]
        requests.append(_messages(_MAXACT_SYSTEM, _numbered(texts, "Example")))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens)
    return [parse_explanation(a) for a in answers]


_PRISM_SYSTEM = (
    "You are studying one unit (a neuron or dictionary feature) inside a language model. "
    "You get numbered texts; in each, the spans where the unit is most active are enclosed "
    "in square brackets. The unit reads text left to right, so its activation can depend "
    "on the current and earlier tokens but never on later ones. Find the one concept the "
    "bracketed spans share and reply with a short label for it (a few words) and nothing "
    "else. Rules: do not list or quote words from the texts; do not write a full sentence "
    "and do not end with a period; do not mention brackets or highlighting; do not begin "
    "with filler such as 'concepts related to'.")


def label_clusters(client: LLMClient, clusters: Sequence[Sequence[Any]], *, max_texts: int = 20,
                   percentile: float = 90.0, temperature: float = 0.0, max_tokens: int = 64) -> list[str]:
    """PRISM's label of each cluster of texts, one request per cluster.

    Parameters
    ----------
    client
        The LLM.
    clusters
        Per cluster (of one feature, or of several), its examples, strongest first.
    max_texts
        Texts shown per cluster (PRISM caps clusters at 20).
    percentile
        Within-text highlighting percentile (:func:`highlight_percentile`).
    temperature, max_tokens
        Sampling parameters of the requests.

    Returns
    -------
    list[str]
        One short label per cluster (:func:`parse_label` of the answer).
    """
    requests = []
    for c, exs in enumerate(clusters):
        if not exs:
            raise ValueError(f"cluster {c} has no texts to label")
        texts = [highlight_percentile(ex, percentile) for ex in list(exs)[:max_texts]]
        requests.append(_messages(_PRISM_SYSTEM, _numbered(texts, "Text") + "\n\nLabel:"))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens)
    return [parse_label(a) for a in answers]


_OUTPUT_SYSTEM = (
    "You are an interpretability researcher describing one feature of a language model by "
    "its effect on the model's output. When the feature is active it raises the probability "
    "of some next tokens (promoted) and lowers others (suppressed); you get the strongest of "
    "each, strongest first, quoted so that leading spaces show. Describe in one short phrase "
    "what the feature makes the model say, or avoid saying. Look for the common theme; "
    "ignore tokens that look like junk, word fragments or noise in other languages or "
    "scripts unless they are the theme, and do not just repeat the list. You may think "
    "briefly first; end with one line that starts with [EXPLANATION]: followed by the phrase.")


def _token_text(t: Any) -> str:
    return str(t["token"]) if isinstance(t, dict) else str(t)


def explain_output(client: LLMClient, promoted: Sequence[Sequence[Any]], suppressed: Sequence[Sequence[Any]],
                   *, temperature: float = 0.0, max_tokens: int = 512) -> list[str]:
    """The output-centric (VocabProj) description of each feature from its logit-lens tokens.

    Parameters
    ----------
    client
        The LLM.
    promoted, suppressed
        Per feature, the top promoted and suppressed tokens (strings, or the feature
        record's ``{"token": ...}`` dicts), strongest first; Gur-Arieh et al. use 50 of each.
        Either list of a feature may be empty, not both.
    temperature, max_tokens
        Sampling parameters of the requests.

    Returns
    -------
    list[str]
        One description per feature (:func:`parse_explanation` of the answer).
    """
    if len(promoted) != len(suppressed):
        raise ValueError(f"promoted has {len(promoted)} features but suppressed has {len(suppressed)}")
    requests = []
    for f, (up, down) in enumerate(zip(promoted, suppressed, strict=True)):
        if not up and not down:
            raise ValueError(f"feature {f} has neither promoted nor suppressed tokens")

        def show(tokens: Sequence[Any]) -> str:
            return ", ".join(json.dumps(_token_text(t), ensure_ascii=False) for t in tokens) or "(none)"

        user = f"Promoted tokens: {show(up)}\n\nSuppressed tokens: {show(down)}"
        requests.append(_messages(_OUTPUT_SYSTEM, user))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens)
    return [parse_explanation(a) for a in answers]


_CONCEPT_SYSTEM = (
    "You write test inputs for a study of a language-model feature. Given a description of "
    "a concept, write texts that clearly and strongly express it. Each text is a few "
    "sentences long and differs from the others in topic, style and wording. Output only "
    "the texts, one per line: no numbering, titles, blank lines or commentary.")


def _concept_messages(description: str, n: int, attempt: int) -> list[dict[str, str]]:
    user = f"Concept: {description}\n\nWrite exactly {n} texts, one per line."
    if attempt:  # also changes the cache key, so a retry at temperature 0 is a new request
        user += (f"\n\n(Attempt {attempt + 1}: the answer must consist of exactly {n} non-empty "
                 f"lines, one text per line, and nothing else.)")
    return _messages(_CONCEPT_SYSTEM, user)


def generate_concept_texts(client: LLMClient, descriptions: Sequence[str], n: int = 10, retries: int = 2, *,
                           temperature: float = 0.0, max_tokens: int = 3000) -> list[list[str]]:
    """CoSy-for-text inputs: ``n`` texts per description, written by the LLM.

    The answer is split with :func:`parse_lines`; when it does not give exactly ``n``
    texts the request is sent again (with an attempt counter in the prompt, so it is a
    new request even at temperature 0), at most ``retries`` times.

    Parameters
    ----------
    client
        The LLM.
    descriptions
        One description per feature (or per label).
    n
        Texts per description (PRISM: 10).
    retries
        Regenerations allowed per description after the first attempt.
    temperature, max_tokens
        Sampling parameters of the requests.

    Returns
    -------
    list[list[str]]
        ``n`` texts per description.

    Raises
    ------
    LLMError
        When some description still has the wrong number of texts after every retry.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (texts per description) must be a positive integer, got {n!r}")
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    texts: list[list[str] | None] = [None] * len(descriptions)
    got: dict[int, int] = {}
    pending = list(range(len(descriptions)))
    for attempt in range(retries + 1):
        if not pending:
            break
        answers = client.chat_many([_concept_messages(descriptions[i], n, attempt) for i in pending],
                                   temperature=temperature, max_tokens=max_tokens)
        failed = []
        for i, answer in zip(pending, answers, strict=True):
            lines = parse_lines(answer)
            if len(lines) == n:
                texts[i] = lines
            else:
                failed.append(i)
                got[i] = len(lines)
        pending = failed
    if pending:
        which = "; ".join(f"description {i} ({descriptions[i][:60]!r}): {got[i]} lines" for i in pending[:5])
        raise LLMError(f"the LLM did not write exactly {n} texts, one per line, after {retries + 1} "
                       f"attempts for {len(pending)} description(s): {which}")
    return texts  # type: ignore[return-value]


# --------------------------------------------------------------------------- scorers


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
              max_tokens: int) -> list[dict[str, float]]:
    """Send each feature's (text, label) items in prompts of ``per_prompt`` and score."""
    requests, slots = [], []
    for f, (description, feature_items) in enumerate(zip(descriptions, items, strict=True)):
        for start in range(0, len(feature_items), per_prompt):
            chunk = feature_items[start:start + per_prompt]
            user = (f"Description: {description}\n\n{_numbered([t for t, _ in chunk], 'Example')}\n\n"
                    f"Answer with a list of {len(chunk)} values, 0 or 1, one per example in order.")
            requests.append(_messages(system, user))
            slots.append((f, [y for _, y in chunk]))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens)
    labels: list[list[int]] = [[] for _ in descriptions]
    predictions: list[list[int | None]] = [[] for _ in descriptions]
    for (f, ys), answer in zip(slots, answers, strict=True):
        parsed = parse_binary_list(answer, len(ys))
        labels[f] += ys
        predictions[f] += parsed if parsed is not None else [None] * len(ys)
    return [classification_metrics(y, p) for y, p in zip(labels, predictions, strict=True)]


_DETECTION_SYSTEM = (
    "You test a description of a language-model feature. You get the description of what "
    "makes the feature fire and numbered text examples. For each example, decide whether "
    "the feature fires anywhere in it according to the description (1) or not (0). Reply "
    "with a list of 0s and 1s, one per example in order, such as [0, 1, 0], and nothing else.")


def detection(client: LLMClient, descriptions: Sequence[str], activating: Sequence[Sequence[Any]],
              non_activating: Sequence[Sequence[Any]], per_prompt: int = 5, seed: int = 0, *,
              temperature: float = 0.0, max_tokens: int = 200) -> list[dict[str, float]]:
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
        feature_items = ([("".join(_tokens_acts(ex)[0]), 1) for ex in pos]
                         + [("".join(_tokens_acts(ex)[0]), 0) for ex in neg])
        rng.shuffle(feature_items)
        items.append(feature_items)
    return _classify(client, _DETECTION_SYSTEM, descriptions, items, per_prompt, temperature, max_tokens)


_FUZZING_SYSTEM = (
    "You test a description of a language-model feature. You get the description and "
    "numbered text examples in which some tokens are wrapped in << and >>. For each example, "
    "decide whether the marked tokens are the ones the description would pick out, so the "
    "marking fits the description (1), or whether the marks look misplaced (0). Reply with "
    "a list of 0s and 1s, one per example in order, such as [0, 1, 0], and nothing else.")


def fuzzing(client: LLMClient, descriptions: Sequence[str], activating: Sequence[Sequence[Any]],
            non_activating: Sequence[Sequence[Any]], per_prompt: int = 5, seed: int = 0, *,
            threshold: float = MAXACT_THRESHOLD, temperature: float = 0.0,
            max_tokens: int = 200) -> list[dict[str, float]]:
    """delphi's fuzzing score: can the LLM tell correctly marked examples from randomly
    marked ones, given the description?

    Activating examples (label 1) are marked where they fire (at least ``threshold`` times
    the example's maximum, :func:`mark_example`); each non-activating example (label 0)
    gets marks on ``ceil(mean number of marked tokens)`` random tokens (at least one;
    seeded per feature). Examples are shuffled and sent ``per_prompt`` to a prompt; the
    LLM answers, per example, whether the marks fit the description. Unparseable answers
    count as missing, not as wrong (see :func:`detection`).

    Parameters and returns as :func:`detection`, plus ``threshold``.
    """
    _check_scoring_input(descriptions, activating, non_activating, per_prompt)
    items = []
    for f, (pos, neg) in enumerate(zip(activating, non_activating, strict=True)):
        rng = random.Random(f"fuzzing:{seed}:{f}")
        feature_items: list[tuple[str, int]] = []
        marked_counts = []
        for ex in pos:
            tokens, acts = _tokens_acts(ex)
            mask = _maxact_mask(acts, threshold, None)
            marked_counts.append(sum(mask))
            feature_items.append((_render(tokens, mask, "<<", ">>"), 1))
        n_marks = max(1, math.ceil(sum(marked_counts) / len(marked_counts))) if marked_counts else 1
        for ex in neg:
            tokens, _ = _tokens_acts(ex)
            chosen = set(rng.sample(range(len(tokens)), min(n_marks, len(tokens))))
            feature_items.append((_render(tokens, [i in chosen for i in range(len(tokens))], "<<", ">>"), 0))
        rng.shuffle(feature_items)
        items.append(feature_items)
    return _classify(client, _FUZZING_SYSTEM, descriptions, items, per_prompt, temperature, max_tokens)
