"""A statistic as a table cell: a mean, its interval and how many items it comes from.

Every headline number on a page says how many items it is over: :class:`Stat` carries
the mean, its standard error and ``n``, and :func:`stat_text` is the one place that writes
it for people (``0.57 ± 0.08 (n=24)``). A statistic over fewer than :data:`MIN_N` items
is still shown, with its n, but marked (``†`` in text, greyed in HTML): two descriptions of
one feature do not make a comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

#: Fewer items than this and a statistic is marked as too few to read.
MIN_N = 5
#: Marks a statistic over fewer than :data:`MIN_N` items in text and Markdown.
LOW_N_MARK = "†"
#: Written for a missing value in every table a person reads.
EMPTY = "—"
#: The footnote under a table that holds a marked statistic.
LOW_N_NOTE = (f"{LOW_N_MARK} fewer than {MIN_N} items: shown with its n, too few to compare "
              "(greyed on the HTML pages).")


class Stat(NamedTuple):
    """A mean over ``n`` items with its standard error, for a table."""

    mean: float
    """The mean (NaN when no item had a value)."""
    se: float | None
    """Its standard error: over items (``std / sqrt(n)``, ``ddof=1``) or a bootstrap over
    windows, as the column's explanation says; None when ``n < 2``."""
    n: int
    """How many items (features, windows, descriptions) the mean is over."""

    @property
    def low_n(self) -> bool:
        """Fewer than :data:`MIN_N` items: shown marked, not to be compared."""
        return self.n < MIN_N


def stat(values: Iterable[Any]) -> Stat:
    """Mean and standard error of ``values``, skipping None and NaN (``n`` counts the rest)."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    n = len(v)
    if n == 0:
        return Stat(math.nan, None, 0)
    mean = math.fsum(v) / n
    se = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1) / n) if n > 1 else None
    return Stat(mean, se, n)


def as_stat(v: Any) -> Stat | None:
    """``v`` as a :class:`Stat` when it is one, or its JSON form ``{"mean", "se", "n"}``."""
    if isinstance(v, Stat):
        return v
    if isinstance(v, dict) and set(v) == set(Stat._fields):
        return Stat(v["mean"] if v["mean"] is not None else math.nan, v["se"], int(v["n"]))
    return None


def _decimals(se: float | None, mean: float) -> int:
    """Decimals that show the SE to one significant digit, two when it starts with 1 or 2
    (0.08, 0.014: rounding 0.014 to 0.01 would change it by a third), between 1 and 4;
    three where there is no SE. The mean is written to the same decimals."""
    if se is None or not math.isfinite(se) or se <= 0:
        return 3 if abs(mean) < 100 else 1
    exp = math.floor(math.log10(se))
    lead = int(f"{se:e}"[0])
    return min(4, max(1, -exp + (1 if lead <= 2 else 0)))


def stat_text(s: Stat, mark: bool = True) -> str:
    """``0.57 ± 0.08 (n=24)``; ``—`` with its n when there is no value; ``mark`` appends
    :data:`LOW_N_MARK` under :data:`MIN_N` items."""
    if not math.isfinite(s.mean):
        return f"{EMPTY} (n={s.n:,})"
    d = _decimals(s.se, s.mean)
    se = f" ± {s.se:.{d}f}" if s.se is not None and math.isfinite(s.se) else ""
    return f"{s.mean:.{d}f}{se} (n={s.n:,})" + (LOW_N_MARK if mark and s.low_n else "")


def flatten(column: str, s: Stat) -> dict[str, Any]:
    """The CSV columns of one statistic: ``column``, ``column SE`` and ``column n``."""
    return {column: s.mean, f"{column} SE": s.se, f"{column} n": s.n}
