"""saekit: sparse dictionary learning for language-model interpretability.

The public API is imported lazily, so ``import saekit`` stays fast: torch and
TransformerLens load on first use.

Every job runs from Python with the config its command takes (a config dataclass or
a TOML file of its fields, then ``key=value`` overrides) and returns its result:
``train`` (the trained dictionaries), ``run_harvest`` (the cache), ``run_compare``
(a ``Comparison``), ``run_eval`` (a ``Result``), ``run_toy`` and ``run_demo`` (a
``Result``). The commands call exactly these. ``harvest`` and ``compare`` keep their
in-memory signatures (a model, hooks and tokens; dictionaries and a model), which is
why their job entries carry the ``run_`` prefix, as ``eval`` (a builtin), ``toy`` and
``demo`` (submodules) do.
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
    "run_harvest": "saekit.activations.job",
    "run_compare": "saekit.compare",
    "run_eval": "saekit.evals",
    "run_toy": "saekit.toy_report",
    "run_demo": "saekit.demo",
    "run_interp": "saekit.interp.pipeline",
    "InterpJob": "saekit.interp.pipeline",
    "load_config": "saekit.config",
    "TrainConfig": "saekit.config",
    "HarvestConfig": "saekit.activations.job",
    "CompareConfig": "saekit.compare",
    "ToyConfig": "saekit.toy_report",
    "DemoConfig": "saekit.demo",
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
