"""Metrics: reconstruction and sparsity on tensors, streamed over batches, and CE/KL
recovered through ``splice``."""

from saekit.metrics.downstream import Recovered, ce_kl_recovered
from saekit.metrics.reconstruction import (
    DeadDense,
    Histogram,
    Recovery,
    cosine_similarity,
    dead_dense,
    density_histogram,
    explained_variance,
    firing_frequency,
    fvu,
    l0,
    l2_ratio,
    mmcs,
    recovery,
    relative_reconstruction_bias,
)
from saekit.metrics.streaming import StreamingStats

__all__ = ["DeadDense", "Histogram", "Recovered", "Recovery", "StreamingStats", "ce_kl_recovered",
           "cosine_similarity", "dead_dense", "density_histogram", "explained_variance",
           "firing_frequency", "fvu", "l0", "l2_ratio", "mmcs", "recovery", "relative_reconstruction_bias"]
