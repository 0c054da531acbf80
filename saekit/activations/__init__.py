"""Activations: harvest from a model, shuffle in memory, cache on disk."""

from saekit.activations.buffer import ShuffleBuffer
from saekit.activations.cache import ActivationCache, CacheError, open_cache
from saekit.activations.cache_writer import CacheWriter
from saekit.activations.harvest import (
           NonFiniteActivationError,
           forward_hooks,
           harvest,
           iter_harvest,
)

__all__ = ["ActivationCache", "CacheError", "CacheWriter", "NonFiniteActivationError", "ShuffleBuffer",
           "forward_hooks", "harvest", "iter_harvest", "open_cache"]
