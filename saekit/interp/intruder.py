"""delphi's intruder score: can an LLM pick out the one example that does not belong?

The prompt holds ``n_examples`` numbered texts, ``n_examples − 1`` of them where the
feature fires and one intruder: a text where it does not fire (or, given so, where
another feature fires). The LLM answers the intruder's number. The score needs no
description and no logprobs, so it suits small local models, and it measures how
coherent a feature's activating examples are, whatever the describer wrote.

Following delphi's intruder scorer (and "Evaluating SAE interpretability without
explanations", 2025), the activating examples show their firing tokens marked
``<<like this>>``. The intruder gets the same number of marks on random tokens, so
the marks alone do not give it away. ``mark=False`` sends plain text. An answer with
no readable number in range counts the trial as unparsed, never as right or wrong:
``accuracy`` is over parsed trials, and ``chance`` is ``1 / n_examples``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from saekit.interp.answers import CallLog, log_to, outcome
from saekit.interp.llm import LLMClient
from saekit.interp.prompts import (
    MAXACT_THRESHOLD,
    chat_messages,
    maxact_mask,
    numbered,
    render_marked,
    tokens_and_acts,
)

SYSTEM = (
    "You are given numbered text examples. All of them but one share a common pattern; "
    "one is an intruder that does not fit it. Some tokens are marked with << and >>. "
    "Find the intruder. Reply with [RESPONSE]: followed by the number of the intruder, "
    "and nothing else.")

_RESPONSE = re.compile(r"\[?RESPONSE\]?\s*:?\s*(?:Example\s*)?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])(\d+)(?!\d|\.\d)")  # whole numbers, not decimals


_ORDINALS = {w: i for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth".split(), 1)}
_ORDINAL = re.compile(r"\b(" + "|".join([*_ORDINALS, "last"]) + r")\b", re.IGNORECASE)


def intruder_outcome(text: str, n: int) -> str:
    """:func:`~saekit.interp.answers.outcome` of an answer: ``parsed`` with ``[RESPONSE]: k``,
    ``salvaged`` when a fallback of :func:`parse_intruder` reads it."""
    m = _RESPONSE.search(text or "")
    return outcome(text, parse_intruder(text, n) is not None, bool(m and 1 <= int(m.group(1)) <= n))


def parse_intruder(text: str, n: int) -> int | None:
    """The intruder's number (1-based, as the examples are numbered) from an answer, or
    ``None``: ``[RESPONSE]: k`` first; else the answer's only number in ``1..n``; else
    its only ordinal word (``the first example``, ``the last one``), as small models write."""
    text = text or ""
    m = _RESPONSE.search(text)
    if m and 1 <= int(m.group(1)) <= n:
        return int(m.group(1))
    found = {int(x) for x in _NUMBER.findall(text) if 1 <= int(x) <= n}
    if not found:
        found = {n if w.lower() == "last" else _ORDINALS[w.lower()] for w in _ORDINAL.findall(text)} & set(range(1, n + 1))
    return found.pop() if len(found) == 1 else None


def _render(ex: Any, mark: bool, rng: random.Random | None, n_marks: int) -> tuple[str, int]:
    """An example as text, with its firing tokens marked (or ``n_marks`` random tokens
    when ``rng`` is given: an intruder); returns the text and how many were marked."""
    tokens, acts = tokens_and_acts(ex)
    if not mark:
        return "".join(tokens), 0
    if rng is None:
        mask = maxact_mask(acts, MAXACT_THRESHOLD, None)
    else:
        chosen = set(rng.sample(range(len(tokens)), min(max(n_marks, 1), len(tokens))))
        mask = [i in chosen for i in range(len(tokens))]
    return render_marked(tokens, mask, "<<", ">>"), sum(mask)


def intruder(client: LLMClient, activating: Sequence[Sequence[Any]], intruders: Sequence[Sequence[Any]],
             n_examples: int = 5, n_trials: int = 5, seed: int = 0, *, mark: bool = True,
             temperature: float = 0.0, max_tokens: int = 32, log: CallLog | None = None) -> list[dict[str, float]]:
    """The intruder score of each feature.

    Parameters
    ----------
    client
        The LLM.
    activating
        Per feature, examples where it fires (``tokens``/``acts``, as the feature store
        gives them); each trial draws ``n_examples − 1`` of them.
    intruders
        Per feature, examples where it does not fire (or where another feature does);
        each trial draws one.
    n_examples, n_trials
        Texts per prompt (delphi: 5) and prompts per feature.
    seed
        Seed of the draws and the intruder's position (per feature, so adding features
        does not change the others' prompts).
    mark
        Mark firing tokens (random ones on the intruder), as delphi does.
    temperature, max_tokens
        Sampling parameters of the requests.
    log
        Counts each answer's outcome (:func:`intruder_outcome`) under ``"intruder"``.

    Returns
    -------
    list[dict]
        Per feature: ``accuracy`` (right answers over parsed trials; NaN when none
        parsed), ``chance`` (``1 / n_examples``), ``n_correct``, ``n_parsed`` and
        ``n_total`` (trials).
    """
    if len(activating) != len(intruders):
        raise ValueError(f"activating and intruders need one entry per feature, got {len(activating)} "
                         f"and {len(intruders)}")
    if not isinstance(n_examples, int) or n_examples < 2:
        raise ValueError(f"n_examples must be an integer >= 2, got {n_examples!r}")
    requests, slots = [], []
    for f, (pos, neg) in enumerate(zip(activating, intruders, strict=True)):
        if len(pos) < n_examples - 1 or not neg:
            raise ValueError(f"feature {f}: an intruder trial needs {n_examples - 1} activating examples "
                             f"and one intruder; got {len(pos)} and {len(neg)}")
        rng = random.Random(f"intruder:{seed}:{f}")
        for _ in range(n_trials):
            shown = [_render(ex, mark, None, 0) for ex in rng.sample(list(pos), n_examples - 1)]
            n_marks = round(sum(k for _, k in shown) / len(shown))
            odd, _ = _render(rng.choice(list(neg)), mark, rng, n_marks)
            at = rng.randrange(n_examples)
            texts = [t for t, _ in shown]
            texts.insert(at, odd)
            user = f"{numbered(texts, 'Example')}\n\nWhich example is the intruder? Reply [RESPONSE]: <number>."
            requests.append(chat_messages(SYSTEM, user))
            slots.append((f, at + 1))
    answers = client.chat_many(requests, temperature=temperature, max_tokens=max_tokens, on_error="skip")
    log_to(log, "intruder", [intruder_outcome(a, n_examples) for a in answers])
    out = [{"n_correct": 0, "n_parsed": 0, "n_total": 0} for _ in activating]
    for (f, truth), answer in zip(slots, answers, strict=True):
        guess = parse_intruder(answer, n_examples)
        out[f]["n_total"] += 1
        if guess is not None:
            out[f]["n_parsed"] += 1
            out[f]["n_correct"] += int(guess == truth)
    return [{**r, "accuracy": r["n_correct"] / r["n_parsed"] if r["n_parsed"] else float("nan"),
             "chance": 1 / n_examples} for r in out]
