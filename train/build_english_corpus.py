"""Build the committed real-English corpus (``checkpoints/english/english.jsonl.xz``).

A real model needs real text, and none can be downloaded at run time. This corpus is
made from text that installs offline and whose licence allows redistribution:

- the Python 3.11 documentation (tutorial, HOWTOs, FAQ, language and library
  reference, What's New, ...), as the reStructuredText sources that Debian's
  ``python3.11-doc`` package ships under ``/usr/share/doc/python3.11/html/_sources``
  (PSF License Version 2);
- the licence texts in Debian's ``/usr/share/common-licenses`` (each licence permits
  verbatim copies of itself).

Markup is stripped to plain prose (roles, directives, heading rules, link targets);
code examples stay, as they do in the docs a model reads. Files are cut at section
headings into documents of at least ``--min-chars`` characters. Every 10th document
(index % 10 == 3) is the held-out split. Re-run only to make a new snapshot:

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python train/build_english_corpus.py --sources /tmp/pydoc/usr/share/doc/python3.11/html/_sources
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Sections of the docs, prose first; c-api, distutils and the build notes are mostly
# signatures and are left out.
SECTIONS = ("tutorial", "howto", "faq", "reference", "whatsnew", "using", "extending", "library")
LICENCES = ("Apache-2.0", "GPL-3", "LGPL-3", "MPL-2.0", "Artistic", "CC0-1.0", "GFDL-1.3", "BSD")

_ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`__?")
_LITERAL = re.compile(r"``([^`]+)``")
_PEP = re.compile(r":(pep|rfc):`(\d+)[^`]*`")
_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")
_EMPH = re.compile(r"(?<![\w*])\*{1,2}([^*\s][^*]*?)\*{1,2}(?![\w*])")
_RULE = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{3,}\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
# Directives whose header line reads as text (a signature, a title); others are dropped.
_KEEP_HEADER = {"function", "method", "class", "attribute", "data", "exception", "decorator",
                "classmethod", "staticmethod", "module", "opcode", "describe", "envvar", "option",
                "note", "warning", "seealso", "versionadded", "versionchanged", "deprecated",
                "impl-detail", "admonition", "topic", "rubric", "productionlist"}
_DROP_BLOCK = {"toctree", "index", "highlight", "testsetup", "testcleanup", "only", "raw",
               "image", "figure", "tabularcolumns", "sectionauthor", "moduleauthor", "include",
               "literalinclude", "audit-event", "availability", "include-raw", "miscnews",
               "c:macro", "c:function", "c:type", "c:member", "c:var", "c:data"}


def clean_rst(text: str) -> list[tuple[str, str]]:
    """Plain text from reStructuredText, as ``(heading, body)`` sections."""
    lines = text.splitlines()
    out: list[str] = []
    skip_indent: int | None = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        if _RULE.match(line):
            continue
        m = _DIRECTIVE.match(line)
        if m:
            name, arg = m.group(2), m.group(3)
            short = name.split(":")[-1]
            if name in _DROP_BLOCK or short in ("index",) or name not in _KEEP_HEADER and short not in _KEEP_HEADER:
                skip_indent = len(m.group(1)) if name in _DROP_BLOCK or short == "index" else None
                if skip_indent is None and arg:
                    out.append(m.group(1) + arg)
                continue
            if arg:
                out.append(m.group(1) + (f"{short.capitalize()}: {arg}" if short in ("note", "warning",
                                         "seealso", "deprecated", "versionadded", "versionchanged") else arg))
            continue
        if line.lstrip().startswith(".. "):  # comments, link targets, substitutions
            skip_indent = indent
            continue
        if re.match(r"^\s*:[\w -]+:(\s|$)", line):  # field lists of directives (:synopsis: ...)
            continue
        # A heading is a text line followed by a rule: mark it for splitting.
        if i + 1 < len(lines) and _RULE.match(lines[i + 1]) and line.strip() and indent == 0:
            out.append("\x00" + line.strip())
            continue
        out.append(line)
    text = "\n".join(out)
    # Literals first, kept aside so that a literal ``*`` is not read as emphasis.
    literals: list[str] = []

    def stash(m: re.Match) -> str:
        literals.append(m.group(1))
        return f"\x01{len(literals) - 1}\x02"

    text = _LITERAL.sub(stash, text)
    text = _PEP.sub(lambda m: f"{m.group(1).upper()} {m.group(2)}", text)
    for pat in (_LINK, _ROLE, _INTERPRETED, _EMPH):
        text = pat.sub(r"\1", text)
    text = re.sub("\x01(\\d+)\x02", lambda m: literals[int(m.group(1))], text)
    text = text.replace("\\ ", "").replace("::\n", ":\n")
    text = re.sub(r"\n{3,}", "\n\n", text)
    sections, heading, body = [], "", []
    for line in text.split("\n"):
        if line.startswith("\x00"):
            if body:
                sections.append((heading, "\n".join(body).strip()))
            heading, body = line[1:], []
        else:
            body.append(line)
    if body:
        sections.append((heading, "\n".join(body).strip()))
    return [(h, b) for h, b in sections if b]


def documents(sources: Path, min_chars: int) -> list[dict]:
    docs = []
    for section in SECTIONS:
        for f in sorted((sources / section).rglob("*.rst.txt")):
            merged, chars = [], 0
            for heading, body in clean_rst(f.read_text(encoding="utf-8")):
                merged.append(f"{heading}\n\n{body}" if heading else body)
                chars += len(merged[-1])
                if chars >= min_chars:
                    docs.append({"text": "\n\n".join(merged), "source": f"python-3.11-docs/{f.relative_to(sources)}",
                                 "licence": "PSF-2.0"})
                    merged, chars = [], 0
            if merged and chars >= min_chars // 4:
                docs.append({"text": "\n\n".join(merged), "source": f"python-3.11-docs/{f.relative_to(sources)}",
                             "licence": "PSF-2.0"})
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=Path, default=Path("/usr/share/doc/python3.11/html/_sources"))
    ap.add_argument("--licences", type=Path, default=Path("/usr/share/common-licenses"))
    ap.add_argument("--out", type=Path, default=ROOT / "checkpoints" / "english")
    ap.add_argument("--min-chars", type=int, default=3000)
    args = ap.parse_args()
    if not (args.sources / "tutorial").is_dir():
        raise SystemExit(f"{args.sources} is not the _sources folder of the Python docs (see --help)")
    docs = documents(args.sources, args.min_chars)
    for name in LICENCES:
        path = args.licences / name
        if path.is_file():
            docs.append({"text": path.read_text(encoding="utf-8").strip(), "source": f"common-licenses/{name}",
                         "licence": f"{name} (verbatim copies permitted)"})
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "english.jsonl.xz"
    # Fixed xz settings and no timestamps: the same inputs give the same bytes.
    with lzma.open(target, "wt", encoding="utf-8", preset=9) as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n")
    chars = sum(len(d["text"]) for d in docs)
    print(f"wrote {target}: {len(docs)} documents, {chars:,} characters, {target.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
