"""Build the committed prose snapshot of the demo corpus.

The demo LM's real-English half is the Python interpreter's own documentation: the
``pydoc_data.topics`` help pages and the docstrings of the standard library's public
modules, classes and functions. Those differ between Python versions, so the snapshot
is committed (``checkpoints/demo-lm/corpus/python-docs.jsonl.xz``) and every machine
trains and evaluates on the same text. Re-run this script only to make a new snapshot.

    python train/build_corpus_snapshot.py --out checkpoints/demo-lm/corpus
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import lzma
import os
import pkgutil
import platform
import sys
import warnings

# Modules that open windows, start servers, print on import or are tests.
SKIP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
    "pydoc_data", "__hello__", "__phello__", "ensurepip", "venv", "xxsubtype",
}
MIN_CHARS = 200


def _docstrings(module) -> list[tuple[str, str]]:
    out = []
    name = module.__name__
    doc = inspect.getdoc(module)
    if doc:
        out.append((name, doc))
    for attr in sorted(getattr(module, "__all__", None) or dir(module)):
        if attr.startswith("_"):
            continue
        obj = getattr(module, attr, None)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != name:
            continue
        doc = inspect.getdoc(obj)
        if doc:
            out.append((f"{name}.{attr}", doc))
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                if meth.startswith("_"):
                    continue
                mdoc = inspect.getdoc(getattr(obj, meth, None))
                if mdoc and mdoc != doc:
                    out.append((f"{name}.{attr}.{meth}", mdoc))
    return out


def _modules() -> list[str]:
    """Top-level standard-library modules and, for packages, their submodules."""
    names = []
    for name in sorted(sys.stdlib_module_names):
        if name in SKIP or name.startswith("_"):
            continue
        names.append(name)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for info in pkgutil.walk_packages(spec.submodule_search_locations, prefix=name + "."):
                parts = info.name.split(".")
                if not any(p.startswith("_") or p in SKIP or p.startswith("test") for p in parts):
                    names.append(info.name)
    return names


def collect() -> list[dict]:
    import pydoc_data.topics as topics

    docs = [{"source": f"topics/{k}", "text": v.strip()} for k, v in sorted(topics.topics.items())]
    seen = {d["text"] for d in docs}
    for name in _modules():
        try:
            with warnings.catch_warnings(), open(os.devnull, "w") as devnull:
                warnings.simplefilter("ignore")
                stdout, sys.stdout = sys.stdout, devnull
                try:
                    module = importlib.import_module(name)
                finally:
                    sys.stdout = stdout
        except Exception:  # platform-specific or optional modules
            continue
        for source, text in _docstrings(module):
            if len(text) >= MIN_CHARS and text not in seen:
                seen.add(text)
                docs.append({"source": f"docstring/{source}", "text": text})
    return docs


LICENCE = """\
The file python-docs.jsonl.xz in this folder is a snapshot of documentation text
taken from the CPython {version} standard library: the `pydoc_data.topics` help
pages and the docstrings of public standard-library modules, classes and functions.

That text is Copyright (c) 2001-2024 Python Software Foundation; All Rights Reserved,
and is used under the Python Software Foundation License Version 2
(https://docs.python.org/3/license.html). It is included unmodified, except that
documents shorter than {min_chars} characters were dropped and duplicates removed.

Built by train/build_corpus_snapshot.py.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="checkpoints/demo-lm/corpus")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    docs = collect()
    path = os.path.join(args.out, "python-docs.jsonl.xz")
    tmp = path + ".tmp"
    with lzma.open(tmp, "wt", encoding="utf-8", preset=9) as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    with open(os.path.join(args.out, "LICENSE-python-docs.txt"), "w") as f:
        f.write(LICENCE.format(version=platform.python_version(), min_chars=MIN_CHARS))
    n_chars = sum(len(d["text"]) for d in docs)
    print(f"{len(docs)} documents, {n_chars:,} characters -> {path} ({os.path.getsize(path):,} bytes)")


if __name__ == "__main__":
    main()
