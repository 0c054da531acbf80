"""Training: the gradient trainer for SAEs."""

from saekit.training.fit import fit, geometric_median

__all__ = ["fit", "geometric_median"]
