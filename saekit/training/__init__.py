"""Training: the gradient trainer for SAEs."""

from saekit.training.trainer import Trainer, fit, geometric_median, train_together

__all__ = ["Trainer", "fit", "geometric_median", "train_together"]
