"""Dictionaries: one interface (``Dictionary``) for SAEs and SNMF."""

from saekit.dictionaries import sae, snmf  # noqa: F401  (register the kinds)
from saekit.dictionaries.base import REGISTRY, Dictionary, DictionaryConfig, register
from saekit.dictionaries.sae import SAE, TrainStep


def load_dictionary(spec, device=None) -> Dictionary:
    """Load a saekit dictionary directory. (Registry ids, ``hf://`` and foreign formats
    come with the checkpoints issue.)"""
    return Dictionary.load(spec, device=device)


__all__ = ["REGISTRY", "SAE", "Dictionary", "DictionaryConfig", "TrainStep", "load_dictionary", "register"]
