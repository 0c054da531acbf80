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
from saekit.version import provenance


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
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of one dict each (same keys) as a Markdown table."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned plain-text table for the terminal."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    cells = [[c for c in cols]] + [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    out = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV, atomically; the columns are every key, in order of first appearance."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def html_page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A standalone page; each section is ``(heading, html_body)``."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}
th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def html_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


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
                out.append(markdown_table([{k: _cell(v) for k, v in r.items()} for r in rows]))
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
                body += html_table([{k: _cell(v) for k, v in r.items()} for r in rows])
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
        return cls(d["name"], d["rows"], d["summary"], d["config"], {f: (out / f).read_bytes() for f in d["figures"]},
                   d["provenance"], d["tables"], sections, d["title"], d["data"],
                   {p: (out / p).read_text("utf-8") for p in d["pages"]})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _cell(v: Any) -> Any:
    """A table cell for people: None and non-finite numbers as an en dash."""
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _alt(fname: str) -> str:
    return Path(fname).stem.replace("_", " ")
