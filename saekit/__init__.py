"""saekit: sparse dictionary learning for language-model interpretability.

The public API is imported lazily, so ``import saekit`` stays fast: torch and
TransformerLens load on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from saekit.version import __version__

_API = {
    "load_model": "saekit.models",
    "hook_names": "saekit.models",
    "hook_width": "saekit.models",
    "validate_hook": "saekit.models",
    "W_out": "saekit.models",
    "splice": "saekit.models",
    "ce_kl_recovered": "saekit.metrics",
    "load_tokens": "saekit.data",
    "token_mask": "saekit.data",
    "concept_labels": "saekit.data",
    "harvest": "saekit.activations",
    "iter_harvest": "saekit.activations",
    "ShuffleBuffer": "saekit.activations",
    "ActivationCache": "saekit.activations",
    "CacheWriter": "saekit.activations",
    "open_cache": "saekit.activations",
    "fit": "saekit.training",
    "train": "saekit.training.recipe",
    "fit_hierarchy": "saekit.hierarchy",
    "load_dictionary": "saekit.formats",
    "Dictionary": "saekit.dictionaries",
    "DictionaryConfig": "saekit.dictionaries",
    "Comparison": "saekit.compare",
    "Result": "saekit.report",
}

_SUBMODULES = {"activations", "cli", "data", "demo", "dictionaries", "evals", "formats", "ground_truth", "hierarchy",
               "interp", "metrics", "models", "report", "superposition", "toy", "toy_report", "training"}

__all__ = [*_API, "compare", "__version__"]


class _Package(types.ModuleType):
    """The package's class: ``saekit.compare`` is the function :func:`saekit.compare.compare`.

    The import system binds a submodule on its package once it loads it, so after
    ``from saekit.compare import Comparison`` a plain attribute ``compare`` would be the
    module. A property on the package's class wins over that binding: it loads the
    submodule on first use (``import saekit`` stays light) and always returns the
    function; the binding itself is ignored (the module stays in ``sys.modules``).
    """

    @property
    def compare(self) -> Any:
        return importlib.import_module("saekit.compare").compare

    @compare.setter
    def compare(self, value: Any) -> None:
        pass  # the import system binding the submodule saekit.compare: keep the function


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"saekit.{name}")
    raise AttributeError(f"module 'saekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | {"compare"})
