"""A time budget for a run's LLM work, and the sizes of its prompts.

``saekit interp --llm-budget SECONDS`` bounds the wall time of the LLM part of a run
(describing, labelling and scoring the LLM features). :class:`LLMBudget`:

1. sets the client's ``deadline``, so no request the cache cannot answer is sent after
   the budget is spent (:class:`~saekit.interp.answers.NoAnswer` ``"skipped"``; a
   cached answer is still used, so a rerun gets further for the same budget);
2. times each feature's LLM work (a *unit*: labels, descriptions, scores), counting
   only units that asked the server something, since cached ones cost nothing;
3. runs the first unit (the pilot) at the smallest :data:`SIZES` level, so that a slow
   server cannot spend the budget on one full-size feature; after each timed unit,
   picks the largest level at which every remaining feature fits. A level not yet
   measured is predicted from the last timed unit: its describing and its scoring
   seconds each scaled by the larger of the ratios of examples sent and of answer
   lengths allowed (its scoring by 2 more when it had no random description to score,
   as the first unit has not). On a CPU server, generating is what costs, and a small
   model often writes up to its limit, so the prediction errs long, which keeps a run
   inside its budget; it is replaced by measured units as soon as there are some;
4. before each further unit, stops when the estimate of one unit exceeds what is left:
   the features not done are counted as skipped in the report.

Without a budget (the default) nothing is planned or skipped: every feature at level 0.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple


class Sizes(NamedTuple):
    """How much one feature's LLM work sends, and how long its answers may be."""

    explain_examples: int
    """Marked examples in the MaxAct prompt (delphi: 40, four per activation decile)."""
    score_examples: int
    """Activating and as many non-activating held-out examples for detection and fuzzing."""
    cosy_texts: int
    """Texts the LLM writes per description for CoSy-on-text (PRISM: 10)."""
    intruder_trials: int
    """Intruder prompts per feature."""
    explain_tokens: int
    """``max_tokens`` of a description (MaxAct, output-centric)."""
    score_tokens: int
    """``max_tokens`` of a detection or fuzzing answer (a list of 0s and 1s)."""
    cosy_tokens: int
    """``max_tokens`` of the answer holding the CoSy texts."""
    cosy_attempts: int
    """Times the CoSy texts are asked for when an answer does not hold exactly
    ``cosy_texts`` lines (the last attempt salvages what it can)."""


#: Level 0 is the full size (every run without a budget); later levels send less, and
#: cap answers shorter: a small model on a CPU writes about 3 tokens a second, so a
#: rambling answer, not the prompt, is what costs most there.
SIZES = (Sizes(40, 10, 10, 5, 512, 200, 3000, 3), Sizes(20, 6, 5, 3, 256, 80, 600, 2),
         Sizes(10, 4, 3, 2, 128, 40, 300, 1))


class LLMBudget:
    """The run's LLM time budget (``seconds=None``: none) over ``client``.

    Call :meth:`unit` around each feature's LLM work (``with budget.unit("describe"):``
    around its describing part, ``budget.unit("score")`` around the rest), then
    :meth:`plan` once the first unit is done and :meth:`fits` before each further one.
    """

    def __init__(self, seconds: float | None, client: Any, level: int | None = None):
        """``level``: where to start (a resumed run passes the level its first run had
        reached); default the smallest with a budget, 0 without."""
        if seconds is not None and not seconds > 0:
            raise ValueError(f"llm_budget_s must be a positive number of seconds or None, got {seconds!r}")
        self.seconds = None if seconds is None else float(seconds)
        self.client = client
        self.start = time.monotonic()
        if self.seconds is not None and client is not None:
            client.deadline = self.start + self.seconds
        if level is None:
            level = 0 if self.seconds is None else len(SIZES) - 1
        self.level = int(level)
        self.parts: list[dict[str, float]] = []  # per timed unit: seconds per part, and its level
        self._current: dict[str, float] | None = None

    # -- timing ----------------------------------------------------------------------

    @property
    def sizes(self) -> Sizes:
        return SIZES[self.level]

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds left (infinite without a budget)."""
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    @property
    def spent(self) -> bool:
        return self.left() <= 0

    def begin(self, level: int | None = None) -> None:
        """Start timing one feature's unit (at ``level``, default the current one)."""
        self._current = {"level": self.level if level is None else level, "asked": 0}

    def note_baseline(self) -> None:
        """The current unit also scored a random description."""
        if self._current is not None:
            self._current["baseline"] = True

    def end(self) -> None:
        """Finish the unit; it counts in the estimates only if it asked the server."""
        if self._current is not None and self._current["asked"]:
            self.parts.append(self._current)
        self._current = None

    def unit(self, part: str) -> _Part:
        """Context manager timing one part (``"describe"`` or ``"score"``) of the unit."""
        return _Part(self, part)

    # -- estimates -------------------------------------------------------------------

    def per_unit(self, level: int | None = None) -> float | None:
        """Estimated seconds of one unit at ``level`` (default: the current one): the mean
        of measured units at that level, else the last timed unit scaled as the module
        docstring says; None before any unit was timed. A unit that scored no random description
        (the first) counts its scoring twice, as later units score one."""
        level = self.level if level is None else level
        same = [u for u in self.parts if u["level"] == level]
        if same:
            return sum(_describe(u) + _score(u) for u in same) / len(same)
        if not self.parts:
            return None
        pilot = self.parts[-1]
        a, b = SIZES[int(pilot["level"])], SIZES[level]
        describe = max(b.explain_examples / a.explain_examples, b.explain_tokens / a.explain_tokens)
        scoring = max(b.score_examples / a.score_examples, b.score_tokens / a.score_tokens,
                      b.cosy_tokens * b.cosy_attempts / (a.cosy_tokens * a.cosy_attempts))
        return _describe(pilot) * describe + _score(pilot) * scoring

    def plan(self, remaining: int) -> None:
        """After a unit: the largest level at which ``remaining`` more units fit, else the
        smallest. Does nothing without a budget or before a timed unit."""
        if self.seconds is None or not self.parts or remaining <= 0:
            return
        left = self.left()
        for level in range(len(SIZES)):
            cost = self.per_unit(level)
            if cost is not None and cost * remaining <= left:
                self.level = level
                return
        self.level = len(SIZES) - 1

    def fits(self) -> bool:
        """Whether one more unit fits in what is left (always, without a budget or an
        estimate; never once the budget is spent)."""
        if self.seconds is None:
            return True
        if self.spent:
            return False
        cost = self.per_unit()
        return cost is None or cost <= self.left()

    def describe(self) -> str:
        """One line for the progress bar: seconds per feature, and what is left."""
        cost = self.per_unit()
        bits = [f"~{cost:.0f} s/feature" if cost is not None else "timing the first feature"]
        if self.seconds is not None:
            bits.append(f"{max(self.left(), 0):.0f} s of {self.seconds:.0f} s left")
        return ", ".join(bits)

    def summary(self) -> dict[str, Any]:
        """The budget's record in the result's summary."""
        return {"budget_s": self.seconds, "seconds": round(self.elapsed(), 1), "level": self.level,
                "sizes": self.sizes._asdict(), "seconds_per_feature": _round(self.per_unit()),
                "timed_features": len(self.parts)}


def _describe(unit: dict[str, float]) -> float:
    return unit.get("describe", 0.0)


def _score(unit: dict[str, float]) -> float:
    return unit.get("score", 0.0) * (1.0 if unit.get("baseline") else 2.0)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


class _Part:
    def __init__(self, budget: LLMBudget, part: str):
        self.budget, self.part = budget, part

    def __enter__(self) -> None:
        stats = getattr(self.budget.client, "stats", None)
        self.asked = stats.asked if stats is not None else 0
        self.t0 = time.monotonic()

    def __exit__(self, *exc: Any) -> None:
        cur = self.budget._current
        if cur is None:
            return
        stats = getattr(self.budget.client, "stats", None)
        cur[self.part] = cur.get(self.part, 0.0) + time.monotonic() - self.t0
        cur["asked"] += (stats.asked if stats is not None else 0) - self.asked
