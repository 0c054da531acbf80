"""Toy settings with a known answer: ground-truth sparse data and toy models of superposition.

:func:`synthetic_sparse_data` draws activations ``x = codes @ features (+ noise)``
from a known dictionary of ``n_features`` unit-norm directions in ``d_in``
dimensions, with sparse non-negative codes. With ``n_features > d_in`` the features
are in superposition, and a dictionary learner can be scored by how well it
recovers them (:func:`mmcs`, :func:`recovery`, defined in :mod:`saekit.metrics`
and re-exported here).

The toy models of Elhage et al. (2022) live in :mod:`saekit.superposition` (the
ReLU-output model trained many at a time, its measures and the paper's experiments),
the ground-truth benchmark of every dictionary kind in :mod:`saekit.ground_truth`,
and the report that runs them all in :mod:`saekit.toy_report` (``saekit toy``); their
main names are re-exported here, so
``from saekit.toy import train_toy_models, run_toy`` works. The synthetic data is
generated in :mod:`saekit.ground_truth` (beside the benchmark that uses it) and
re-exported here too, as are the ground truths of the other architectures: the known
sparse map for transcoders (:mod:`saekit.ground_truth_transcoder`) and the feature
hierarchy for absorption (:mod:`saekit.ground_truth_hierarchy`).
"""

from __future__ import annotations

from saekit.ground_truth import (
    GroundTruthData,
    SyntheticData,
    ground_truth_benchmark,
    synthetic_sparse_data,
)
from saekit.ground_truth_hierarchy import (
    Absorption,
    HierarchicalData,
    absorption_scores,
    hierarchical_sparse_data,
    hierarchy_benchmark,
)
from saekit.ground_truth_transcoder import SparseMap, synthetic_sparse_map, transcoder_benchmark
from saekit.metrics import Recovery, mmcs, recovery
from saekit.superposition import (
    REGIMES,
    Sensitivity,
    ToyModels,
    adversarial_sensitivity,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    interference,
    train_toy_models,
)
from saekit.superposition_experiments import (
    AntipodalPairs,
    Geometry,
    PhaseDiagram,
    SparsitySweep,
    antipodal_pairs,
    pentagon,
    phase_diagram,
    sparsity_sweep,
)
from saekit.toy_report import run_toy

__all__ = ["SyntheticData", "synthetic_sparse_data", "mmcs", "recovery", "Recovery",
           "ToyModels", "train_toy_models", "feature_norms", "interference", "dimensions_per_feature",
           "feature_dimensionality", "adversarial_sensitivity", "Sensitivity", "sparsity_sweep",
           "SparsitySweep", "phase_diagram", "PhaseDiagram", "REGIMES", "pentagon", "Geometry",
           "antipodal_pairs", "AntipodalPairs", "ground_truth_benchmark", "GroundTruthData", "run_toy",
           "SparseMap", "synthetic_sparse_map", "transcoder_benchmark", "HierarchicalData", "hierarchical_sparse_data",
           "Absorption", "absorption_scores", "hierarchy_benchmark"]
