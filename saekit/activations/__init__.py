"""Activations: harvest from a model, shuffle in memory, cache on disk, stream live."""

from saekit.activations.buffer import ShuffleBuffer
from saekit.activations.cache import ActivationCache, CacheError, CacheRows, open_cache
from saekit.activations.cache_writer import CacheWriter
from saekit.activations.harvest import (
           NonFiniteActivationError,
           forward_hooks,
           harvest,
           iter_harvest,
)
from saekit.activations.stream import LiveStream

__all__ = ["ActivationCache", "CacheError", "CacheRows", "CacheWriter", "LiveStream",
           "NonFiniteActivationError", "ShuffleBuffer", "forward_hooks", "harvest", "iter_harvest",
           "open_cache"]
