"""What became of each LLM answer: parsed, salvaged, unparseable, failed or skipped.

A small local model answers off-format, a slow server times out, a time budget runs
out. None of these may end a run or pass as a good score, and each must be counted so
that a report says how much of it rests on readable answers. This module holds the
pieces every LLM caller shares:

- :class:`NoAnswer`: what :meth:`~saekit.interp.llm.LLMClient.chat_many` returns, with
  ``on_error="skip"``, for a call that got no answer. It is the empty string (which no
  parser reads), tagged with why: ``"failed"`` (still failing after its retries) or
  ``"skipped"`` (never sent: the run's LLM time budget was spent).
- :class:`CallLog`: per-run counts of the outcome of every answer, per call type
  (``describe``, ``detection``, ``fuzzing``, ``intruder``, ``prism_labels``,
  ``cosy_texts``, ``simulation``, ``judge``). Outcomes are :data:`OUTCOMES`.
- the tolerant parsers of describers' answers (:func:`parse_explanation`,
  :func:`parse_label`, :func:`parse_lines`) and of a judge's rating
  (:func:`parse_rating`), each with its ``*_outcome`` (whether the answer came in the
  asked-for format).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["OUTCOMES", "CallLog", "NoAnswer", "explanation_outcome", "first_texts", "label_outcome", "log_to",
           "outcome", "parse_explanation", "parse_label", "parse_lines", "parse_rating", "rating_outcome",
           "strip_thinking"]

#: ``parsed``: in the asked-for format. ``salvaged``: read by a fallback (a tag missing,
#: prose around a list, a retry one example at a time). ``unparseable``: nothing usable,
#: left out of every score. ``failed``: no answer after the retries. ``skipped``: not asked
#: because the time budget was spent.
OUTCOMES = ("parsed", "salvaged", "unparseable", "failed", "skipped")


class NoAnswer(str):
    """The empty answer of a call that got none; ``reason`` is ``"failed"`` or ``"skipped"``."""

    reason: str

    def __new__(cls, reason: str) -> NoAnswer:
        if reason not in ("failed", "skipped"):
            raise ValueError(f"NoAnswer reason must be 'failed' or 'skipped', got {reason!r}")
        s = super().__new__(cls, "")
        s.reason = reason
        return s

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # pickles (and deep-copies) with its reason
        return NoAnswer, (self.reason,)


def outcome(answer: str, usable: bool, clean: bool = True) -> str:
    """The outcome of one answer: its :class:`NoAnswer` reason, else ``unparseable`` when
    nothing usable came out of it, ``parsed`` when it was ``clean`` (in the asked-for
    format), ``salvaged`` otherwise."""
    if isinstance(answer, NoAnswer):
        return answer.reason
    if not usable:
        return "unparseable"
    return "parsed" if clean else "salvaged"


class CallLog:
    """Counts of answer outcomes per call type, for one run (thread-safe).

    ``log.add("detection", "parsed")``; ``log.as_dict()`` gives
    ``{kind: {outcome: n, ..., "total": n}}`` with every outcome present (0 when none).
    """

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, result: str, n: int = 1) -> None:
        if result not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {result!r}")
        with self._lock:
            row = self._counts.setdefault(kind, dict.fromkeys(OUTCOMES, 0))
            row[result] += n

    def extend(self, kind: str, results: Iterable[str]) -> None:
        for r in results:
            self.add(kind, r)

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {k: {**v, "total": sum(v.values())} for k, v in self._counts.items()}

    def merge(self, counts: dict[str, dict[str, int]]) -> None:
        """Add counts read back from :meth:`as_dict` (a resumed run's earlier part)."""
        for kind, row in counts.items():
            for result in OUTCOMES:
                if row.get(result):
                    self.add(kind, result, int(row[result]))


def log_to(log: CallLog | None, kind: str, results: Iterable[str]) -> None:
    """``log.extend(kind, results)`` when a log is given (the functions' ``log=`` argument)."""
    if log is not None:
        log.extend(kind, results)


# --------------------------------------------------------------------------- ratings

_RATING_BRACKETS = re.compile(r"rating\W{0,6}\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]", re.IGNORECASE)
_RATING_BARE = re.compile(r"rating\W{0,6}(-?\d+(?:\.\d+)?)\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")


def parse_rating(text: str, low: float = 0, high: float = 2) -> float | None:
    """A judge's rating in ``[low, high]`` from its answer, or ``None`` if there is none.

    Tries, in order, the last ``Rating: [[n]]`` (any case, with markdown such as
    ``**Rating:** [[n]]``), the last ``Rating: n``, and the last bare ``[[n]]``; a
    template placeholder echoed back (``Rating: [[score]]``) is skipped because it is not
    a number. A number outside ``[low, high]`` counts as no rating.
    """
    if not isinstance(text, str):
        return None
    for pattern in (_RATING_BRACKETS, _RATING_BARE, _BRACKETS):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if low <= value <= high else None
    return None


def rating_outcome(text: str, low: float = 0, high: float = 2) -> str:
    """:func:`outcome` of a judge's answer: ``parsed`` when it holds ``Rating: [[n]]``,
    ``salvaged`` when only a fallback of :func:`parse_rating` reads it."""
    value = parse_rating(text, low, high)
    return outcome(text, value is not None, bool(_RATING_BRACKETS.search(text or "")))


# --------------------------------------------------------------------------- parsers

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_EXPLANATION_TAG = re.compile(r"\[\s*explanation\s*\]\s*:?|\bexplanation\s*:", re.IGNORECASE)
_LABEL_TAG = re.compile(r"\b(?:label|concept)\s*:", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def strip_thinking(text: str) -> str:
    """The answer without reasoning models' ``<think>...</think>`` blocks."""
    return _THINK.sub("", text or "")


def _clean(text: str) -> str:
    text = " ".join(text.split()).strip("*_ ")
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def explanation_outcome(answer: str) -> str:
    """:func:`~saekit.interp.answers.outcome` of an explainer's answer: ``parsed`` with its
    ``[EXPLANATION]:`` tag, ``salvaged`` without (the whole answer is the description)."""
    return outcome(answer, bool(parse_explanation(answer)), bool(_EXPLANATION_TAG.search(strip_thinking(answer))))


def label_outcome(answer: str) -> str:
    """:func:`~saekit.interp.answers.outcome` of a PRISM label: ``parsed`` when the answer is
    one short line (the few words asked for), ``salvaged`` when the label had to be cut
    from a longer answer."""
    lines = [line for line in strip_thinking(answer).splitlines() if line.strip()]
    label = parse_label(answer)
    return outcome(answer, bool(label), len(lines) == 1 and len(label.split()) <= 10)


def parse_explanation(text: str) -> str:
    """The description in an explainer's answer: the text after the last
    ``[EXPLANATION]:`` (any case, markdown around it allowed), whitespace collapsed; the
    whole answer, cleaned, when the tag is missing or nothing follows it."""
    text = strip_thinking(text)
    tags = list(_EXPLANATION_TAG.finditer(text))
    if tags:
        after = _clean(text[tags[-1].end():])
        if after:
            return after
        text = _EXPLANATION_TAG.sub(" ", text)
    return _clean(text)


def parse_label(text: str) -> str:
    """A short label from an answer: after the last ``Label:``/``Concept:`` if present,
    else the last non-empty line; quotes, markdown, a final period and an echoed
    ``Text 6:`` prefix removed (a bare echo of one is no label: ``""``)."""
    text = strip_thinking(text)
    tags = list(_LABEL_TAG.finditer(text))
    if tags and text[tags[-1].end():].strip():
        text = text[tags[-1].end():].strip().splitlines()[0]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    label = _clean(_ITEM_PREFIX.sub("", text.strip(), count=1).lstrip("-•* "))
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
    for raw in strip_thinking(text).splitlines():
        line = raw.strip()
        if not line or line.startswith("```") or set(line) <= set("-*_=# "):
            continue
        if not items and line.endswith(":"):
            continue  # a preamble before the first item
        line = _clean(_ITEM_PREFIX.sub("", line, count=1))
        if line:
            items.append(line)
    return items


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_texts(lines: list[str], n: int) -> list[str]:
    """The first ``n`` lines, or else the first ``n`` sentences, of an answer's lines
    (fewer when it has fewer)."""
    if len(lines) >= n:
        return lines[:n]
    sentences = [x.strip() for line in lines for x in _SENTENCE_END.split(line) if x.strip()]
    return sentences[:n] if len(sentences) >= n else lines
