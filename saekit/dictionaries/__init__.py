"""Dictionaries: one interface (``Dictionary``) for SAEs and SNMF."""

from typing import Any

from saekit.dictionaries import matryoshka, sae, snmf, thresholded  # noqa: F401  (register the kinds)
from saekit.dictionaries.base import REGISTRY, Dictionary, DictionaryConfig, register
from saekit.dictionaries.sae import SAE, TrainStep


def __getattr__(name: str) -> Any:
    # ``load_dictionary`` lives in :mod:`saekit.formats` (it detects formats and reads the
    # registry, which build on this package); this keeps ``from saekit.dictionaries import
    # load_dictionary`` working without an import cycle.
    if name == "load_dictionary":
        from saekit.formats import (
            load_dictionary,  # compatibility alias (see tests/test_architecture.py)
        )

        return load_dictionary
    raise AttributeError(f"module 'saekit.dictionaries' has no attribute {name!r}")


__all__ = ["REGISTRY", "SAE", "Dictionary", "DictionaryConfig", "TrainStep", "load_dictionary", "register"]
