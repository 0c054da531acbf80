"""A feature's activation histogram as inline SVG, with axes fitted to its data.

No plotting library: a dashboard writes hundreds of these. The store keeps a fixed grid
of log10 bins from 1e-4 to 1e4 (:data:`saekit.interp.store_format.HIST_RANGE`); drawn
as is, a feature firing between 0.3 and 5 is a few bars lost in eight empty decades. So
the x-axis spans the non-empty bins only, and its scale follows their range: log when the
values span at least a factor of :data:`LOG_RATIO`, linear otherwise. On a linear axis
the log bins are re-binned into equal widths (a bin's count shared by overlap, as if
uniform inside it), so a bar's height stays a count of tokens. Ticks fall on round
numbers (1, 2, 5 × 10^k) on both axes.
"""

from __future__ import annotations

import math

#: Values spanning at least this factor get a log x-axis.
LOG_RATIO = 10.0
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 640, 200, 52, 16, 10, 40


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def tick_label(v: float) -> str:
    """A tick's number, short and plain (``0.3``, ``5``, ``2000``, ``1e+05``)."""
    if v == 0:
        return "0"
    return f"{v:.4g}" if 1e-4 <= abs(v) < 1e5 else f"{v:.0e}"


def nice_step(span: float, n: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 × 10^k) giving about ``n`` intervals over ``span``."""
    raw = span / n
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)


def linear_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round ticks (multiples of :func:`nice_step`) inside ``[lo, hi]``."""
    step = nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks at 1 × 10^k inside ``[lo, hi]``, plus 2 and 5 (and 3) × 10^k when there are few
    decades; every other decade when there are many."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = k1 - k0
    mults = (1, 2, 3, 5) if decades <= 2 else (1, 2, 5) if decades <= 3 else (1,)
    every = 1 if decades <= 6 else 2
    ticks = [m * 10.0 ** k for k in range(k0, k1 + 1, every) for m in mults]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def _rebin(bins: list[tuple[float, float, float]], lo: float, hi: float, n: int) -> list[tuple[float, float, float]]:
    """``bins`` (lo, hi, count) shared into ``n`` equal-width bins over ``[lo, hi]`` by overlap."""
    w = (hi - lo) / n
    out = [0.0] * n
    for a, b, c in bins:
        for j in range(max(0, int((a - lo) / w)), min(n, int((b - lo) / w) + 1)):
            overlap = min(b, lo + (j + 1) * w) - max(a, lo + j * w)
            if overlap > 0:
                out[j] += c * overlap / (b - a)
    return [(lo + j * w, lo + (j + 1) * w, c) for j, c in enumerate(out)]


def histogram_svg(hist, fmt=tick_label) -> str:
    """The bar chart of ``hist`` (``{"edges", "counts", "scale"}``; edges are log10 of the
    activation when ``scale`` is ``"log10"``) as an ``<svg>``, or a short note when it
    cannot be drawn. ``fmt`` writes the numbers in the bars' tooltips."""
    if not isinstance(hist, dict):
        return ""
    edges = [_num(e) for e in hist.get("edges") or []]
    counts = [_num(c) or 0.0 for c in hist.get("counts") or []]
    if len(edges) < 2 or len(counts) != len(edges) - 1 or None in edges or not edges[-1] > edges[0]:
        return "<p class=meta>histogram unreadable</p>"
    log_bins = hist.get("scale") == "log10"
    val = (lambda e: 10.0 ** e) if log_bins else (lambda e: e)
    filled = [i for i, c in enumerate(counts) if c > 0]
    if not filled:
        return "<p class=meta>no activations recorded</p>"
    bins = [(val(edges[i]), val(edges[i + 1]), counts[i]) for i in range(filled[0], filled[-1] + 1)]
    lo, hi = bins[0][0], bins[-1][1]
    log_axis = log_bins and hi / lo >= LOG_RATIO
    if log_axis:
        ticks = log_ticks(lo, hi)
        pos = math.log10
    else:
        if log_bins:  # equal widths on a linear axis, at about the log bins' finest resolution
            finest = min(b - a for a, b, _ in bins)
            bins = _rebin(bins, lo, hi, max(4, min(40, round((hi - lo) / finest))))
        ticks = linear_ticks(lo, hi)
        pos = float
    x0, x1 = pos(lo), pos(hi)
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    x = lambda v: _LEFT + (pos(v) - x0) / (x1 - x0) * pw
    cmax = max(c for _, _, c in bins)
    ystep = nice_step(cmax, 4) if cmax >= 4 else 1.0
    ytop = math.ceil(cmax / ystep) * ystep
    y = lambda c: _TOP + ph - c / ytop * ph
    out = [f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
           f'viewBox="0 0 {_W} {_H}" role="img" aria-label="activation histogram">']
    k = 0
    while k * ystep <= ytop + 1e-9:  # y ticks and light grid lines
        c = k * ystep
        out.append(f'<line x1="{_LEFT}" y1="{y(c):.1f}" x2="{_LEFT + pw}" y2="{y(c):.1f}" stroke="#eee"/>'
                   f'<text x="{_LEFT - 4}" y="{y(c) + 3:.1f}" font-size="10" text-anchor="end">'
                   f'{tick_label(c)}</text>')
        k += 1
    for a, b, c in bins:
        if c <= 0:
            continue
        out.append(f'<rect x="{x(a):.1f}" y="{y(c):.1f}" width="{max(x(b) - x(a), 0.5):.1f}"'
                   f' height="{_TOP + ph - y(c):.1f}" fill="#e8731a"><title>{fmt(a)} to {fmt(b)}:'
                   f' {c:.0f}</title></rect>')
    out.append(f'<line x1="{_LEFT}" y1="{_TOP + ph}" x2="{_LEFT + pw}" y2="{_TOP + ph}" stroke="#888"/>')
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" y1="{_TOP + ph}" x2="{x(t):.1f}" y2="{_TOP + ph + 4}" stroke="#888"/>'
                   f'<text x="{x(t):.1f}" y="{_TOP + ph + 15}" font-size="10" text-anchor="middle">'
                   f'{tick_label(t)}</text>')
    out.append(f'<text x="{_LEFT + pw / 2}" y="{_H - 4}" font-size="11" text-anchor="middle">activation'
               f'{" (log scale)" if log_axis else ""}</text>'
               f'<text x="12" y="{_TOP + ph / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {_TOP + ph / 2})">tokens</text></svg>')
    return "".join(out)
