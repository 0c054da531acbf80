"""saekit: sparse dictionary learning for language-model interpretability.

The public API is imported lazily, so ``import saekit`` stays fast: torch and
TransformerLens load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

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
    "load_dictionary": "saekit.dictionaries",
    "Dictionary": "saekit.dictionaries",
    "DictionaryConfig": "saekit.dictionaries",
}

_SUBMODULES = {"activations", "cli", "data", "demo", "dictionaries", "evals", "formats", "ground_truth", "hierarchy",
               "interp", "metrics", "models", "report", "superposition", "toy", "toy_report", "training"}

# Eager on purpose: a lazy entry would be replaced by the submodule as soon as anything
# runs `from saekit.compare import ...` (the import system binds submodules on the
# package); saekit.compare imports only the standard library at module level.
from saekit.compare import Comparison, compare  # noqa: E402

__all__ = [*_API, "compare", "Comparison", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"saekit.{name}")
    raise AttributeError(f"module 'saekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
