"""LLM describers of auto-interp: prompt builders and client calls (the tolerant parsers of
their answers are in :mod:`saekit.interp.answers`, and importable from here).

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

The LLM scorers (delphi's detection and fuzzing) are in :mod:`saekit.interp.detection`;
delphi's simulation scorer, whose prompt :func:`simulation_messages` builds here, is in
:mod:`saekit.interp.simulation`.

Examples are any objects with ``.tokens`` (decoded token strings, leading spaces kept) and
``.acts`` (the feature's activation on each token), such as
``saekit.interp.store.TextExample``, or dicts with those keys.

The prompts are paraphrases written for saekit, not the original projects' text.
:data:`PROMPT_VERSION` opens every system message, so editing a prompt (and bumping the
version) changes every cache key and no stale answer is reused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from saekit.interp.answers import (  # the parsers live there; importable from here as before
    CallLog,
    NoAnswer,
    explanation_outcome,
    first_texts,
    label_outcome,
    log_to,
    outcome,
    parse_explanation,
    parse_label,
    parse_lines,
)
from saekit.interp.llm import LLMClient, LLMError

#: Goes into every request (system message); bump it whenever a prompt below changes.
PROMPT_VERSION = "saekit-prompts/1"

MAXACT_THRESHOLD = 0.3
"""delphi marks tokens at or above this fraction of the maximum activation."""


# --------------------------------------------------------------------------- examples


def tokens_and_acts(ex: Any) -> tuple[list[str], list[float]]:
    """An example's ``(tokens, activations)``, from a dict or an object with those fields."""
    if isinstance(ex, dict):
        tokens, acts = ex["tokens"], ex["acts"]
    else:
        tokens, acts = ex.tokens, ex.acts
    tokens, acts = [str(t) for t in tokens], [float(a) for a in acts]
    if len(tokens) != len(acts):
        raise ValueError(f"an example has {len(tokens)} tokens but {len(acts)} activations; "
                         "expected one activation per token")
    return tokens, acts


def render_marked(tokens: Sequence[str], mask: Sequence[bool], open: str, close: str) -> str:
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


def one_line(text: str) -> str:
    """``text`` on one line: its newlines written as ``\\n``. Examples are laid out one per
    line ("Example 3: ..."); a raw newline inside one would split it in two for the model."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def maxact_mask(acts: Sequence[float], threshold: float, max_act: float | None) -> list[bool]:
    """Tokens whose activation reaches ``threshold`` × the maximum (``max_act``, or the example's own)."""
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
    tokens, acts = tokens_and_acts(ex)
    return render_marked(tokens, maxact_mask(acts, threshold, max_act), open, close)


def highlight_percentile(ex: Any, percentile: float = 90.0, open: str = "[", close: str = "]") -> str:
    """The text of an example with PRISM's highlighting: tokens at or above the text's own
    ``percentile``-th activation percentile and above 0 are wrapped in ``[ ]``.

    At-or-above (PRISM writes "above") so that a text whose firing tokens all tie, or
    a text that fires everywhere, still shows its spans.
    """
    tokens, acts = tokens_and_acts(ex)
    if not acts:
        return ""
    cut = float(np.percentile(np.asarray(acts, dtype=np.float64), percentile))
    return render_marked(tokens, [a > 0 and a >= cut for a in acts], open, close)


def numbered(texts: Sequence[str], name: str) -> str:
    """One line per text: ``{name} 1: ...``, newlines folded."""
    return "\n".join(f"{name} {i}: {one_line(t)}" for i, t in enumerate(texts, 1))


def chat_messages(system: str, user: str) -> list[dict[str, str]]:
    """A system and a user message, the system one tagged with :data:`PROMPT_VERSION`."""
    return [{"role": "system", "content": f"[{PROMPT_VERSION}] {system}"},
            {"role": "user", "content": user}]


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
                   max_tokens: int = 512, on_error: str = "raise", log: CallLog | None = None) -> list[str]:
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
    on_error
        ``"skip"``: a call that fails after its retries (or is not sent, the time budget
        being spent) gives ``""`` instead of raising; see ``LLMClient.chat_many``.
    log
        Counts each answer's outcome under ``"describe"`` (:func:`explanation_outcome`).

    Returns
    -------
    list[str]
        One description per feature (:func:`parse_explanation` of the answer; ``""``
        when there was no usable answer).
    """
    requests = []
    for f, exs in enumerate(examples):
        if not exs:
            raise ValueError(f"feature {f} (position in examples) has no examples to explain")
        texts = [mark_example(ex, threshold) for ex in exs]
        requests.append(chat_messages(_MAXACT_SYSTEM, numbered(texts, "Example")))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens, on_error=on_error)
    log_to(log, "describe", map(explanation_outcome, answers))
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
                   percentile: float = 90.0, temperature: float = 0.0, max_tokens: int = 64,
                   on_error: str = "raise", log: CallLog | None = None) -> list[str]:
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
    on_error, log
        As :func:`explain_maxact`; outcomes count under ``"prism_labels"``
        (:func:`label_outcome`).

    Returns
    -------
    list[str]
        One short label per cluster (:func:`parse_label` of the answer; ``""`` when
        there was no usable answer).
    """
    requests = []
    for c, exs in enumerate(clusters):
        if not exs:
            raise ValueError(f"cluster {c} has no texts to label")
        texts = [highlight_percentile(ex, percentile) for ex in list(exs)[:max_texts]]
        requests.append(chat_messages(_PRISM_SYSTEM, numbered(texts, "Text") + "\n\nLabel:"))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens, on_error=on_error)
    log_to(log, "prism_labels", map(label_outcome, answers))
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
                   *, temperature: float = 0.0, max_tokens: int = 512, on_error: str = "raise",
                   log: CallLog | None = None) -> list[str]:
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
    on_error, log
        As :func:`explain_maxact` (outcomes under ``"describe"``).

    Returns
    -------
    list[str]
        One description per feature (:func:`parse_explanation` of the answer; ``""``
        when there was no usable answer).
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
        requests.append(chat_messages(_OUTPUT_SYSTEM, user))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens, on_error=on_error)
    log_to(log, "describe", map(explanation_outcome, answers))
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
    return chat_messages(_CONCEPT_SYSTEM, user)


def generate_concept_texts(client: LLMClient, descriptions: Sequence[str], n: int = 10, retries: int = 2, *,
                           temperature: float = 0.0, max_tokens: int = 3000, on_error: str = "raise",
                           salvage: bool = False, log: CallLog | None = None) -> list[list[str] | None]:
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
    on_error
        ``"raise"``: :class:`LLMError` when a description still lacks its texts after
        every retry, or a call fails. ``"skip"``: that description gets ``None``.
    salvage
        On the last attempt, take the first ``n`` lines of a longer answer, or else its
        first ``n`` sentences, rather than give up (small models rarely keep to one text
        per line).
    log
        Counts each answer's outcome under ``"cosy_texts"``: ``parsed`` when it is
        exactly ``n`` lines, ``salvaged`` when ``n`` texts came out only after dropping
        numbering, bullets or a preamble, or by ``salvage``, else ``unparseable`` (and
        asked again).

    Returns
    -------
    list[list[str] | None]
        ``n`` texts per description (``None`` for a description that got none, with
        ``on_error="skip"``).

    Raises
    ------
    LLMError
        With ``on_error="raise"``, when some description still has the wrong number of
        texts after every retry.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (texts per description) must be a positive integer, got {n!r}")
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    texts: list[list[str] | None] = [None] * len(descriptions)
    got: dict[int, int] = {}
    pending, lost = list(range(len(descriptions))), []
    for attempt in range(retries + 1):
        if not pending:
            break
        answers = client.chat_many([_concept_messages(descriptions[i], n, attempt) for i in pending],
                                   temperature=temperature, max_tokens=max_tokens, on_error=on_error)
        failed = []
        for i, answer in zip(pending, answers, strict=True):
            lines = parse_lines(answer)
            raw = [line for line in answer.splitlines() if line.strip()]
            clean = len(raw) == len(lines) == n
            if len(lines) != n and salvage and attempt == retries:
                lines = first_texts(lines, n)
            log_to(log, "cosy_texts", [outcome(answer, len(lines) == n, clean)])
            if len(lines) == n:
                texts[i] = lines
            elif isinstance(answer, NoAnswer):  # already retried by the client, or out of time
                lost.append(i)
                got[i] = 0
            else:
                failed.append(i)
                got[i] = len(lines)
        pending = failed
    pending += lost
    if pending and on_error == "skip":
        return texts
    if pending:
        which = "; ".join(f"description {i} ({descriptions[i][:60]!r}): {got[i]} lines" for i in pending[:5])
        raise LLMError(f"the LLM did not write exactly {n} texts, one per line, after {retries + 1} "
                       f"attempts for {len(pending)} description(s): {which}")
    return texts


# --------------------------------------------------------------------------- simulation

_SIMULATION_SYSTEM = (
    "You predict where a feature of a language model fires. You get a description of what "
    "makes the feature fire and a list of tokens. For each token, predict the feature's "
    "activation on it: an integer from 0 (does not fire) to 10 (fires as strongly as it ever "
    "does). Most tokens are 0. Reply with one list of integers, one per token in order, and "
    "nothing else.")

#: delphi's simulator prompts carry few-shot examples as earlier turns of the chat; these
#: two (written for saekit) show the answer form. Without them SmolLM2-135M answered
#: prose; with them it answers a list.
_SIMULATION_SHOTS = (("names of animals", ("The", " dog", " ran", " after", " the", " cat"), (0, 10, 0, 0, 0, 9)),
                     ("the word 'and' joining two nouns", ("bread", " and", " butter", " or", " jam"),
                      (0, 8, 0, 0, 0)))


def _simulation_user(description: str, tokens: Sequence[str]) -> str:
    return (f"Description: {one_line(description)}\nTokens: {json.dumps(list(tokens), ensure_ascii=False)}\n"
            f"Answer with a list of {len(tokens)} integers.")


def simulation_messages(description: str, tokens: Sequence[str]) -> list[dict[str, str]]:
    """delphi's (OpenAI's) simulator prompt for one example, asking for every token's 0–10
    activation at once as a list (:mod:`saekit.interp.simulation` says why a list and not
    the expected value over logprobs): the system message, two worked examples as earlier
    turns, then the description and the tokens as a JSON list (leading spaces and newlines
    visible)."""
    messages = chat_messages(_SIMULATION_SYSTEM, _simulation_user(*_SIMULATION_SHOTS[0][:2]))
    messages.append({"role": "assistant", "content": json.dumps(list(_SIMULATION_SHOTS[0][2]))})
    for description_, tokens_, acts in _SIMULATION_SHOTS[1:]:
        messages += [{"role": "user", "content": _simulation_user(description_, tokens_)},
                     {"role": "assistant", "content": json.dumps(list(acts))}]
    messages.append({"role": "user", "content": _simulation_user(description, tokens)})
    return messages
