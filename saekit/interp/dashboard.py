"""A static HTML dashboard of feature records: opens straight from disk, no server, no network.

Layout written under ``out``::

    index.html              table of all features: search box, sortable columns
    features/00017.html     one page per feature (stats, descriptions, examples, histogram, ...)
    features.json           {"meta": ..., "features": [...]} for machines

Everything a page needs (CSS, the index's JS and its row data) is inlined, so the site works
from ``file://`` and can be copied anywhere. Feature pages carry no script at all: they are
rendered here in Python, which keeps each one small and fast to write for hundreds of features.

The index reads its state from the URL hash, ``index.html#q=monday&sort=-frequency``
(``sort=KEY`` ascending, ``sort=-KEY`` descending, nulls always last), and writes it back when
the user types or clicks a header, so a view can be bookmarked or checked by a headless browser.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from saekit.fileio import atomic_write_text
from saekit.interp.histogram import histogram_svg
from saekit.report import TABLE_CSS, html_legend, html_th, json_safe

__all__ = ["render_dashboard", "write_dashboard"]

# Keys of meta shown in the index header, in this order.
_META_KEYS = ("dictionary", "kind", "d_dict", "hook", "model", "n_tokens", "n_features_shown",
              "notes")
_MAX_EXAMPLES = 50  # per list on a feature page: beyond this a page gets heavy, not more useful

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em 2em;color:#222}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em}h3{font-size:1em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.2em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}th.sortable{cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
.meta{color:#555}.meta span{margin-right:1.2em}.ex{font:13px/1.7 ui-monospace,monospace;
white-space:pre-wrap;border-bottom:1px solid #eee;padding:.15em 0}.ex .t{border-radius:2px}
.exmax{display:inline-block;min-width:4em;color:#888;margin-right:.5em}.tok{white-space:pre-wrap;
font-family:ui-monospace,monospace;background:#f4f4f4;padding:0 .2em}nav{margin-bottom:.6em}
nav a{margin-right:1em}#q{width:28em;max-width:100%;font-size:1em;padding:.3em}
.lens{display:flex;flex-wrap:wrap;gap:0 3em}svg.hist{max-width:100%;height:auto}td.text{min-width:16em}
""" + TABLE_CSS


# ----------------------------------------------------------------------------- data cleaning

def _validate(meta, features) -> tuple[dict, list[dict]]:
    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    if not isinstance(features, list):
        raise ValueError(f"features must be a list of dicts, got {type(features).__name__}")
    meta = json_safe(meta)
    cols = meta.get("score_columns") or []
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise ValueError("meta['score_columns'] must be a list of strings")
    meta["score_columns"] = cols
    records, seen = [], set()
    for i, rec in enumerate(features):
        if not isinstance(rec, dict):
            raise ValueError(f"features[{i}] must be a dict, got {type(rec).__name__}")
        rec = json_safe(rec)
        f = rec.get("feature")
        if "feature" not in rec or isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"features[{i}]['feature'] must be a non-negative int, got {f!r}")
        if f in seen:
            raise ValueError(f"features[{i}]['feature'] = {f} appears twice")
        seen.add(f)
        records.append(rec)
    return meta, records


# ----------------------------------------------------------------------------- formatting

def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _fmt(x) -> str:
    """Short human form of a number; an em dash for missing values."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "\u2014" if x is None else _esc(x)
    if isinstance(x, int):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
        return f"{x:.2e}"
    return f"{x:.4g}"


# Invisible characters made visible: newline as ↵, tab as ⇥, other controls as their
# Unicode control pictures (U+2400 + code); spaces survive through pre-wrap CSS.
_VISIBLE = {c: chr(0x2400 + c) for c in range(32)} | {10: "\u21b5", 9: "\u21e5", 127: "\u2421"}


def _tok(tok) -> str:
    return html.escape(("" if tok is None else str(tok)).translate(_VISIBLE), quote=True)


def _script_json(obj) -> str:
    """JSON safe to inline in <script>: '<', '>' and '&' only occur inside JSON strings, so
    their \\u escapes leave the value unchanged while making '</script>' and '<!--' impossible;
    U+2028/9 are escaped for older JS engines that treat them as line ends."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                 ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _page(title: str, body: str, script: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
            f"{script}</body></html>\n")


def _table(head: list[str], rows: list[list[str]], num: set[int] = frozenset(), notes: tuple[str, ...] = ()) -> str:
    """Table from already-escaped cells, in a box that scrolls sideways when wide; columns
    in ``num`` are right-aligned; each header explained in its tooltip and in a legend
    under the table (:mod:`saekit.report.glossary`), then ``notes``."""
    th = "".join(html_th(h) for h in head)
    # A description's text keeps a readable width when the score columns make the table wide.
    cls = [" class=num" if j in num else " class=text" if h == "text" else "" for j, h in enumerate(head)]
    body = "".join("<tr>" + "".join(f"<td{cls[j]}>{c}</td>" for j, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'
            + html_legend(head, notes))


# ----------------------------------------------------------------------------- feature page

def _example(ex, scale: float | None) -> str:
    """One window; each firing token's background alpha is act / scale (the feature's max,
    so intensities compare across examples and deciles), its title the activation."""
    if not isinstance(ex, dict):
        return ""
    tokens, acts = ex.get("tokens") or [], ex.get("acts") or []
    if not scale or scale <= 0:
        scale = max((a for a in map(_num, acts) if a is not None), default=0.0)
    parts = []
    for i, t in enumerate(tokens):
        a = _num(acts[i]) if i < len(acts) else None
        if a is not None and a > 0:
            alpha = min(1.0, a / scale) if scale > 0 else 1.0
            parts.append(f'<span class="t" style="background:rgba(255,110,0,{alpha:.2f})"'
                         f' title="act {a:.4g}">{_tok(t)}</span>')
        else:
            parts.append(_tok(t))  # zero tokens need no element: keeps pages light
    mx = _num(ex.get("max"))
    if mx is None:
        mx = max((a for a in map(_num, acts) if a is not None), default=None)
    return f'<div class="ex"><span class="exmax">{_fmt(mx)}</span>{"".join(parts)}</div>'


def _examples(exs, scale) -> str:
    exs = [e for e in (exs or []) if isinstance(e, dict)][:_MAX_EXAMPLES]
    return "".join(_example(e, scale) for e in exs) or "<p class=meta>none</p>"


def _score_names(descs, cols: list[str]) -> list[str]:
    names = list(cols)
    for d in descs:
        for k in (d.get("scores") or {}) if isinstance(d, dict) else ():
            if k not in names:
                names.append(k)
    return names


def _feature_page(rec: dict, meta: dict, prev: int | None, nxt: int | None) -> str:
    f = rec["feature"]
    nav = ['<a href="../index.html">index</a>']
    if prev is not None:
        nav.append(f'<a href="{prev:05d}.html">&larr; {prev}</a>')
    if nxt is not None:
        nav.append(f'<a href="{nxt:05d}.html">{nxt} &rarr;</a>')
    parts = [f"<nav>{''.join(nav)}</nav><h1>Feature {f}</h1>",
             f'<div class="meta">{_esc(meta.get("title") or "")}</div><h2>Stats</h2>',
             _table(["count", "frequency", "max", "mean", "polysemanticity"],
                    [[_fmt(rec.get(k)) for k in ("count", "frequency", "max", "mean",
                                                 "polysemanticity")]], set(range(5)))]
    descs = [d for d in rec.get("descriptions") or [] if isinstance(d, dict)]
    if descs:
        names = _score_names(descs, meta["score_columns"])
        rows = [[_esc(d.get("method")), _esc(d.get("text"))]
                + [_fmt((d.get("scores") or {}).get(n)) for n in names] for d in descs]
        parts += ["<h2>Descriptions</h2>",
                  _table(["method", "text", *names], rows, set(range(2, 2 + len(names))))]
    scale = _num(rec.get("max"))
    parts += ["<h2>Top examples</h2>", _examples(rec.get("examples"), scale)]
    samples = rec.get("samples") or []
    if samples:
        parts.append("<h2>Decile samples</h2>")
        for i, group in enumerate(samples):
            group = group if isinstance(group, list) else []
            parts.append(f"<details><summary>decile {i + 1}{' (highest)' if i == 0 else ''}"
                         f" &middot; {len(group)} examples</summary>"
                         f"{_examples(group, scale)}</details>")
    if rec.get("histogram"):
        parts += ["<h2>Activation histogram</h2>", histogram_svg(rec["histogram"], _fmt)]
    lens = rec.get("logit_lens")
    if isinstance(lens, dict):
        cols = []
        for side in ("promoted", "suppressed"):
            rows = [[f'<span class="tok">{_tok(e.get("token"))}</span>', _fmt(e.get("value"))]
                    for e in lens.get(side) or [] if isinstance(e, dict)]
            cols.append(f"<div><h3>{side}</h3>{_table(['token', 'value'], rows, {1})}</div>")
        parts += ["<h2>Logit lens</h2>", f'<div class="lens">{"".join(cols)}</div>']
    tops = [t for t in rec.get("top_tokens") or [] if isinstance(t, dict)]
    if tops:
        rows = [[f'<span class="tok">{_tok(t.get("token"))}</span>']
                + [_fmt(t.get(k)) for k in ("mean", "count", "lift")] for t in tops]
        parts += ["<h2>Top tokens</h2>", _table(["token", "mean", "count", "lift"], rows, {1, 2, 3})]
    clusters = [c for c in rec.get("clusters") or [] if isinstance(c, dict)]
    if clusters:
        parts.append("<h2>Clusters</h2>")
        for c in clusters:
            parts.append(f'<h3>{_esc(c.get("label") or "(no label)")}</h3><div class="meta">'
                         f'size {_fmt(c.get("size"))} &middot; mean act {_fmt(c.get("mean_act"))}'
                         f'</div>{_examples(c.get("examples"), scale)}')
    return _page(f"Feature {f} \u2014 {meta.get('title') or 'saekit'}", "\n".join(parts))


# ----------------------------------------------------------------------------- index

_INDEX_JS = r"""
const tbody = document.getElementById("rows"), box = document.getElementById("q");
const heads = Array.from(document.querySelectorAll("th[data-key]"));
let sortKey = null, desc = false;
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number" || Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(2) : String(Number(v.toPrecision(4)));
}
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const s = p.get("sort") || "";
  box.value = p.get("q") || ""; desc = s.startsWith("-"); sortKey = s.replace(/^-/, "") || null;
}
function writeHash() {
  const p = new URLSearchParams();
  if (box.value) p.set("q", box.value);
  if (sortKey) p.set("sort", (desc ? "-" : "") + sortKey);
  try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* file:// quirks */ }
}
function render() {
  const q = box.value.trim().toLowerCase();
  // A query matches the feature index exactly, or any description text / top token.
  let rows = DATA.rows.filter(r => !q || String(r.f) === q || r.s.includes(q));
  const i = DATA.cols.findIndex(c => c.key === sortKey);
  if (i >= 0) {
    const num = DATA.cols[i].num;
    rows = rows.slice().sort((a, b) => {
      const x = a.v[i], y = b.v[i];
      if (x === null || y === null) return (x === null) - (y === null);  // nulls last, both ways
      const c = num ? x - y : String(x).localeCompare(String(y));
      return desc ? -c : c;
    });
  }
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.feature = r.f;
    r.v.forEach((v, j) => {
      const td = document.createElement("td"), a = document.createElement("a");
      if (j === 0) {  // textContent everywhere: data never becomes markup
        a.href = "features/" + String(r.f).padStart(5, "0") + ".html"; a.textContent = v;
        td.appendChild(a);
      } else td.textContent = fmt(v);
      if (DATA.cols[j].num) td.className = "num";
      tr.appendChild(td);
    });
    frag.appendChild(tr);
  }
  tbody.replaceChildren(frag);
  heads.forEach(h => { if (h.dataset.key === sortKey) h.dataset.dir = desc ? "desc" : "asc";
                       else delete h.dataset.dir; });
  document.getElementById("shown").textContent = rows.length + " of " + DATA.rows.length + " features";
}
heads.forEach(h => h.addEventListener("click", () => {
  // Numbers sort largest first on the first click, text A to Z; a second click reverses.
  if (sortKey === h.dataset.key) desc = !desc;
  else { sortKey = h.dataset.key; desc = h.dataset.num === "1"; }
  writeHash(); render();
}));
box.addEventListener("input", () => { writeHash(); render(); });
window.addEventListener("hashchange", () => { readHash(); render(); });
readHash(); render();
"""


def _calls_table(rows: object) -> str:
    """The LLM answers' outcomes per call type (``meta["llm_calls"]``), or nothing."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return ""
    cols = list(rows[0])
    body = [[_esc(r.get(c)) for c in cols] for r in rows]
    return "<h2>LLM answers</h2>" + _table(cols, body, set(range(1, len(cols)))) + "\n"


_INDEX_NOTE = ("One row per feature; click a header to sort (hover it for its meaning), a feature for its "
               "page. Scores come from the feature's first description that has them.")


def _index_page(meta: dict, records: list[dict]) -> str:
    scores = meta["score_columns"]
    keys = ["feature", "frequency", "count", "max", "description", *scores]
    rows = []
    for rec in records:
        descs = [d for d in rec.get("descriptions") or [] if isinstance(d, dict)]
        vals = [rec["feature"], *(_num(rec.get(k)) for k in ("frequency", "count", "max")),
                str(descs[0].get("text") or "") if descs else None]
        for name in scores:  # from the first description that has this score
            vals.append(next((v for d in descs
                              if (v := _num((d.get("scores") or {}).get(name))) is not None), None))
        vals[2] = int(vals[2]) if vals[2] is not None and vals[2].is_integer() else vals[2]
        words = [str(d.get("text") or "") for d in descs]
        words += [str(t.get("token") or "") for t in rec.get("top_tokens") or []
                  if isinstance(t, dict)]
        rows.append({"f": rec["feature"], "v": vals, "s": "\n".join(words).lower()})
    cols = [{"key": k, "num": k != "description"} for k in keys]
    heads = "".join(html_th(c["key"], f' class="sortable{" num" if c["num"] else ""}" data-key="{_esc(c["key"])}"'
                                      f' data-num="{int(c["num"])}"') for c in cols)
    info = "".join(f"<span>{_esc(k)}: <strong>{_esc(meta[k])}</strong></span>"
                   for k in _META_KEYS if meta.get(k) not in (None, ""))
    title = meta.get("title") or "saekit dashboard"
    body = (f'<h1>{_esc(title)}</h1><div class="meta">{info}</div>\n{_calls_table(meta.get("llm_calls"))}'
            f'<p><input id="q" type="search" placeholder="search: feature index, description,'
            f' top token" autofocus> <span id="shown" class="meta"></span></p>\n'
            f'<div class="scroll"><table id="features"><thead><tr>{heads}</tr></thead><tbody id="rows"></tbody>'
            f'</table></div>\n<noscript>This table needs JavaScript; the feature pages are in'
            f' features/.</noscript>' + html_legend(keys, (_INDEX_NOTE,)))
    script = (f"<script>\nconst DATA = {_script_json({'cols': cols, 'rows': rows})};\n"
              f"{_INDEX_JS}</script>\n")
    return _page(title, body, script)


# ----------------------------------------------------------------------------- entry point

def render_dashboard(meta: dict, features: list[dict]) -> dict[str, str]:
    """The dashboard site as text files by relative path: ``features/00017.html`` per
    feature, ``features.json``, and ``index.html`` last (it links to every other page).
    Arguments and errors as :func:`write_dashboard`; nothing is written."""
    meta, records = _validate(meta, features)
    ids = [r["feature"] for r in records]
    pages = {}
    for i, rec in enumerate(records):
        prev = ids[i - 1] if i > 0 else None
        nxt = ids[i + 1] if i + 1 < len(ids) else None
        pages[f"features/{rec['feature']:05d}.html"] = _clean(_feature_page(rec, meta, prev, nxt))
    pages["features.json"] = _clean(json.dumps({"meta": meta, "features": records}, ensure_ascii=False,
                                               allow_nan=False))
    pages["index.html"] = _clean(_index_page(meta, records))
    return pages


def _clean(text: str) -> str:
    # Lone surrogates (from surrogateescape-decoded tokens) cannot be UTF-8 encoded.
    return text.encode("utf-8", "replace").decode("utf-8")


def write_dashboard(out: str | Path, meta: dict, features: list[dict]) -> Path:
    """Write the static dashboard site for ``features`` into the folder ``out``.

    Parameters
    ----------
    out : str or Path
        Folder to write into (created if missing); existing files of the same names are
        replaced atomically, one by one.
    meta : dict
        Site-wide information (title, dictionary, kind, d_dict, hook, model, n_tokens,
        notes, score_columns), see the auto-interp data contract.
    features : list of dict
        Feature records; only ``"feature"`` (a non-negative int, unique) is required.
        NaN and infinite values are written as null.

    Returns
    -------
    Path
        The path of ``index.html``.

    Raises
    ------
    ValueError
        If ``meta`` is not a dict, ``features`` is not a list of dicts, or a record lacks
        a valid ``"feature"``.
    """
    pages = render_dashboard(meta, features)
    out = Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    for rel, text in pages.items():  # index.html last: once it exists, every page it links to does too
        atomic_write_text(out / rel, text)
    return out / "index.html"
