"""What every analysis returns and how it is written: :class:`Result` (a tidy table, a
summary, the config and provenance, figures) and its :meth:`Result.save`, plus the
helpers it uses: tables as Markdown, text and CSV, figures as PNG, and one
self-contained HTML page (data inlined)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from saekit.fileio import atomic_write_bytes, atomic_write_text
from saekit.report.glossary import STAT_NOTE, explain, legend
from saekit.report.stats import EMPTY, LOW_N_NOTE, MIN_N, Stat, as_stat, flatten, stat, stat_text
from saekit.version import provenance

__all__ = ["EMPTY", "MIN_N", "Result", "Section", "Stat", "explain", "figure_png", "html_img", "html_page",
           "html_table", "json_safe", "legend", "markdown_table", "stat", "stat_text", "text_table", "write_csv"]


def json_safe(v: Any) -> Any:
    """A strict-JSON copy: non-finite floats become None (null), NamedTuples dicts,
    tensors and numpy values plain Python (through ``tolist``), other objects strings."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if hasattr(v, "_asdict"):
        return json_safe(v._asdict())
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if hasattr(v, "tolist"):
        return json_safe(v.tolist())
    return str(v)


def _fmt(v: Any) -> str:
    """One cell for people: a :class:`Stat` with its n, numbers shortened, and None or a
    non-finite number as :data:`EMPTY`."""
    if (s := as_stat(v)) is not None:
        return stat_text(s)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return EMPTY
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The footnotes a table needs: how to read its statistics, and the low-n mark."""
    stats = [s for r in rows for v in r.values() if (s := as_stat(v)) is not None]
    return ([STAT_NOTE] if stats else []) + ([LOW_N_NOTE] if any(s.low_n for s in stats) else [])


def markdown_table(rows: Sequence[dict[str, Any]], explain_columns: bool = True) -> str:
    """Rows of one dict each as a Markdown table; under it each column's explanation
    (:mod:`saekit.report.glossary`) and the notes on its statistics."""
    if not rows:
        return "(no rows)\n"
    cols = _columns(rows)

    def cell(text: str) -> str:  # a bare | would end the cell (column names like "mean ||x||")
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(_fmt(r.get(c))) for c in cols) + " |" for r in rows]
    notes = [f"- **{cell(c)}**: {e}" for c, e in legend(cols)] if explain_columns else []
    notes += [f"- {n}" for n in _notes(rows)]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned plain-text table for the terminal (missing cells as
    :data:`EMPTY`, statistics with their n), with the low-n footnote when one is marked."""
    if not rows:
        return "(no rows)"
    cols = _columns(rows)
    cells = [[c for c in cols]] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    out = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out + _notes(rows))


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV, atomically; the columns are every key, in order of first appearance,
    a :class:`Stat` written as ``col``, ``col SE``, ``col n``."""
    buf = io.StringIO()
    # A Stat becomes three columns (mean, SE, n): CSV cells stay plain numbers.
    rows = [{k2: v2 for k, v in r.items() for k2, v2 in _csv_cells(k, v).items()} for r in rows]
    if rows:
        w = csv.DictWriter(buf, fieldnames=_columns(rows))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _csv_cells(column: str, v: Any) -> dict[str, Any]:
    s = as_stat(v)
    return flatten(column, s) if s is not None else {column: v}


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


#: The table parts every saekit page shares (these pages and the interp dashboard): wide
#: tables scroll inside their box instead of being cut or widening the page, explained
#: headers show a dotted underline, statistics over too few items are greyed.
TABLE_CSS = """.scroll{overflow-x:auto;max-width:100%;margin:1rem 0}th[title]{cursor:help;
text-decoration:underline dotted #999}td.lown{color:#999}td.txt{text-align:left}pre{overflow-x:auto;max-width:100%}
.legend{font-size:.85em;color:#555;margin:.2rem 0 1rem}.legend dt{font-weight:600;display:inline}
.legend dd{display:inline;margin:0 0 0 .3rem}.legend dd::after{content:"";display:block}"""
PAGE_CSS = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}td{white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto}
""" + TABLE_CSS


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A standalone page; each section is ``(heading, html_body)``."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{html.escape(title)}</title>
<style>{PAGE_CSS}</style>
</head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def html_legend(columns: Sequence[str], notes: Sequence[str] = ()) -> str:
    """The short legend under a table: each column's explanation, then the notes."""
    items = "".join(f"<dt>{html.escape(c)}</dt><dd>{html.escape(e)}</dd>" for c, e in legend(columns))
    items += "".join(f"<dd>{html.escape(n)}</dd>" for n in notes)
    return f'<dl class="legend">{items}</dl>' if items else ""


def html_th(column: str, attrs: str = "") -> str:
    """A header cell whose tooltip is the column's explanation."""
    e = explain(column)
    title = f' title="{html.escape(e)}"' if e else ""
    return f"<th{attrs}{title}>{html.escape(column)}</th>"


def html_td(v: Any) -> str:
    """A cell: a statistic over fewer than :data:`MIN_N` items greyed, with a tooltip."""
    s = as_stat(v)
    if s is not None and s.low_n:
        return (f'<td class="lown" title="only {s.n} items (fewer than {MIN_N}): too few to compare">'
                f"{html.escape(stat_text(s, mark=False))}</td>")
    cls = ' class="txt"' if isinstance(v, str) else ""  # words read left to right, numbers align right
    return f"<td{cls}>{html.escape(_fmt(v))}</td>"


def html_table(rows: Sequence[dict[str, Any]], explain_columns: bool = True) -> str:
    """Rows as a table in a box that scrolls sideways when wide, each header explained in
    its tooltip and, with ``explain_columns``, in a legend under it."""
    if not rows:
        return "<p>(no rows)</p>"
    cols = _columns(rows)
    head = "".join(html_th(c) for c in cols)
    body = "".join("<tr>" + "".join(html_td(r.get(c)) for c in cols) + "</tr>" for r in rows)
    legend_html = html_legend(cols if explain_columns else (), _notes(rows))
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>{legend_html}'


def html_img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


# --------------------------------------------------------------------------- the result of an analysis


class Section(NamedTuple):
    """One part of a result's page: a heading, prose, a table, figures and links. The
    Markdown report and the HTML page are both rendered from a result's sections."""

    heading: str
    text: str = ""
    """Prose (plain text; escaped in HTML)."""
    table: str | None = None
    """Which table to show: the result's ``name`` for its ``rows``, a key of ``tables``,
    or None for none."""
    columns: tuple[str, ...] = ()
    """The table's columns shown, in this order (empty: every column)."""
    figures: tuple[str, ...] = ()
    """File names of figures (keys of ``figures``) shown under the table; the alt text is
    the file's stem with ``_`` as spaces."""
    links: tuple[tuple[str, str], ...] = ()
    """``(label, relative href)`` pairs shown last (e.g. the demo's feature dashboards)."""


#: What :meth:`Result.save` writes besides the figures, pages and extra tables.
JSON_KEYS = ("name", "title", "summary", "config", "provenance", "rows", "tables", "data", "figures", "pages",
             "sections")


@dataclass(frozen=True)
class Result:
    """What every analysis returns (compare, the evaluators, interp, toy, the demo).

    Analyses compute it and never write; :meth:`save` writes it, in one layout for all:

    - ``{name}.csv``: ``rows``; ``{table}.csv`` for each non-empty extra table;
    - ``{name}.json``: name, title, summary, config, provenance, rows, tables, data, the
      names of the figures and pages, and the sections. **NaN policy**: strict JSON, NaN
      and ±inf are written as ``null`` (:func:`json_safe`, ``allow_nan=False``); CSV
      cells keep Python's ``nan``/``inf``;
    - ``report.md`` and ``index.html`` (self-contained, figures inlined), both rendered
      from ``sections``; ``index.html`` from ``pages`` instead when the analysis renders
      its own site there (interp's feature dashboard);
    - each figure as a PNG and each page, by its relative path.

    Every file is written atomically (:mod:`saekit.fileio`), ``index.html`` last.
    :meth:`load` reads a saved result back.

    Several tables: ``rows`` is the main one (one row per item); an analysis that
    genuinely measures several kinds of item (compare: dictionaries, pairs, configurations,
    concepts) keeps the others as named ``tables`` rather than forcing them into one.
    """

    name: str
    """The analysis (``compare``, ``sensitivity``, ``interp``, ``toy``, ``demo``, ...): the
    stem of the CSV and JSON files."""
    rows: list[dict[str, Any]]
    """The tidy table: one row per item, one column per metric; plain scalars and strings."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Headline numbers (what a test or the demo checks), JSON-serialisable."""
    config: dict[str, Any] = field(default_factory=dict)
    """The settings it ran with (model, data, the config dataclass as a dict, derived values)."""
    figures: dict[str, bytes] = field(default_factory=dict)
    """PNG plots by file name."""
    provenance: dict[str, Any] | None = None
    """saekit, torch and TransformerLens versions and the git SHA
    (:func:`saekit.version.provenance`); filled in when not given."""
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Further tidy tables by name (each saved as ``{table}.csv``)."""
    sections: tuple[Section, ...] = ()
    """The report's parts in order; empty: a summary, the rows, each table and the figures."""
    title: str = ""
    """The page's title; default ``saekit {name}``."""
    data: dict[str, Any] = field(default_factory=dict)
    """Numbers that are not a table (curves, matrices, nested records), JSON only."""
    pages: dict[str, str] = field(default_factory=dict)
    """Text files of a site the analysis renders, by relative path (interp's dashboard:
    ``index.html``, ``features.json``, ``features/00017.html``)."""

    def __post_init__(self) -> None:
        if self.provenance is None:
            object.__setattr__(self, "provenance", provenance())
        bad = [k for k in self.tables if k == self.name]
        if bad:
            raise ValueError(f"an extra table may not be named like the result ({self.name!r})")

    # -- views ------------------------------------------------------------------------

    def table(self, name: str) -> list[dict[str, Any]]:
        """``rows`` for the result's own name, else ``tables[name]``."""
        return self.rows if name == self.name else self.tables[name]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document :meth:`save` writes (strict JSON values: NaN/inf are None)."""
        doc = {"name": self.name, "title": self.title, "summary": self.summary, "config": self.config,
               "provenance": self.provenance, "rows": self.rows, "tables": self.tables, "data": self.data,
               "figures": list(self.figures), "pages": list(self.pages),
               "sections": [s._asdict() for s in self.sections]}
        return json_safe(doc)

    def _sections(self) -> tuple[Section, ...]:
        if self.sections:
            return self.sections
        scalars = [k for k, v in self.summary.items() if v is None or isinstance(v, bool | int | float | str)]
        out = [Section("Summary", table="_summary")] if scalars else []
        out.append(Section("Results", table=self.name))
        out += [Section(k, table=k) for k, v in self.tables.items() if v]
        if self.figures:
            out.append(Section("Figures", figures=tuple(self.figures)))
        return tuple(out)

    def _rows_of(self, s: Section) -> list[dict[str, Any]] | None:
        if s.table is None:
            return None
        if s.table == "_summary":
            return [{"metric": k, "value": v} for k, v in self.summary.items()
                    if v is None or isinstance(v, bool | int | float | str)]
        rows = self.table(s.table)
        return [{c: r.get(c) for c in s.columns} for r in rows] if s.columns else rows

    def markdown(self, images: bool = True) -> str:
        """The report as Markdown; ``images`` links the PNGs :meth:`save` writes beside it."""
        out = [f"# {self.title or 'saekit ' + self.name}\n"]
        for s in self._sections():
            out.append(f"## {s.heading}\n")
            if s.text:
                out.append(s.text + "\n")
            rows = self._rows_of(s)
            if rows is not None:
                out.append(markdown_table(rows))
            if images:
                out += [f"![{_alt(f)}]({f})\n" for f in s.figures if f in self.figures]
            out += [f"[{label}]({href})\n" for label, href in s.links]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.markdown(images=False)

    def html(self) -> str:
        """The self-contained HTML page (figures inlined), with the settings and provenance."""
        parts = []
        for s in self._sections():
            body = f"<p>{html.escape(s.text)}</p>" if s.text else ""
            rows = self._rows_of(s)
            if rows is not None:
                body += html_table(rows)
            body += "".join(html_img(self.figures[f], _alt(f)) for f in s.figures if f in self.figures)
            if s.links:
                body += "<p>" + ", ".join(f'<a href="{html.escape(h)}">{html.escape(lab)}</a>'
                                          for lab, h in s.links) + "</p>"
            parts.append((s.heading, body))
        settings = json.dumps(json_safe({"config": self.config, "provenance": self.provenance}), indent=2)
        parts.append(("Settings", f"<pre>{html.escape(settings)}</pre>"))
        return html_page(self.title or f"saekit {self.name}", parts)

    # -- disk ---------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        """Write the result into ``out_dir`` (created if missing) in the layout of the class
        docstring, each file atomically; returns the directory."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / f"{self.name}.csv", self.rows)
        for k, rows in self.tables.items():
            if rows:
                write_csv(out / f"{k}.csv", rows)
        for fname, png in self.figures.items():
            atomic_write_bytes(out / fname, png)
        for rel, text in self.pages.items():
            if rel != "index.html":
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(out / rel, text)
        atomic_write_text(out / f"{self.name}.json",
                          json.dumps(self.to_dict(), indent=1, allow_nan=False, ensure_ascii=False) + "\n")
        atomic_write_text(out / "report.md", self.markdown())
        atomic_write_text(out / "index.html", self.pages.get("index.html") or self.html())  # last: all it links exists
        return out

    @classmethod
    def load(cls, out_dir: str | Path, name: str | None = None) -> Result:
        """Read a result :meth:`save` wrote (its JSON, figures and pages) back from ``out_dir``;
        ``name`` picks one where the directory holds several."""
        out = Path(out_dir)
        docs = [p for p in sorted(out.glob("*.json")) if name in (None, p.stem)]
        docs = [(p, d) for p, d in ((p, _read_json(p)) for p in docs)
                if isinstance(d, dict) and set(JSON_KEYS) <= set(d) and d["name"] == p.stem]
        if len(docs) != 1:
            raise FileNotFoundError(f"{out}: expected one saved result ({{name}}.json), found "
                                    f"{[p.name for p, _ in docs] or 'none'}")
        _, d = docs[0]
        sections = tuple(Section(**{**s, "columns": tuple(s["columns"]), "figures": tuple(s["figures"]),
                                    "links": tuple(tuple(link) for link in s["links"])}) for s in d["sections"])
        return cls(d["name"], _stats_back(d["rows"]), d["summary"], d["config"],
                   {f: (out / f).read_bytes() for f in d["figures"]}, d["provenance"],
                   {k: _stats_back(v) for k, v in d["tables"].items()}, sections, d["title"], d["data"],
                   {p: (out / p).read_text("utf-8") for p in d["pages"]})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _stats_back(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells saved as ``{"mean", "se", "n"}`` read back as the :class:`Stat` they were."""
    return [{k: as_stat(v) or v for k, v in r.items()} for r in rows]


def _alt(fname: str) -> str:
    return Path(fname).stem.replace("_", " ")
