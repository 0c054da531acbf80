"""Metrics: reconstruction and sparsity on tensors, streamed over batches, and CE/KL
recovered through ``splice``."""

from saekit.metrics.downstream import Recovered, ce_kl_recovered, ce_kl_recovered_all
from saekit.metrics.reconstruction import (
    DeadDense,
    Histogram,
    Match,
    Recovery,
    cosine_similarity,
    dead_dense,
    density_histogram,
    explained_variance,
    firing_frequency,
    fvu,
    l0,
    l2_ratio,
    match,
    mmcs,
    recovery,
    relative_reconstruction_bias,
    unit_rows,
)
from saekit.metrics.streaming import Correlation, StreamingStats
from saekit.metrics.uncertainty import bootstrap_se, fvu_with_se, mean_se

__all__ = ["Correlation", "DeadDense", "Histogram", "Recovered", "Recovery", "StreamingStats", "bootstrap_se", "ce_kl_recovered",
           "ce_kl_recovered_all", "fvu_with_se", "mean_se",
           "cosine_similarity", "dead_dense", "density_histogram", "explained_variance",
           "firing_frequency", "fvu", "l0", "l2_ratio", "Match", "match", "mmcs", "recovery", "relative_reconstruction_bias", "unit_rows"]
