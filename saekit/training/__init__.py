"""Training: the gradient trainer for SAEs, the SNMF fitter, and ``fit`` for either."""

from saekit.training.api import fit
from saekit.training.trainer import Trainer, geometric_median, train_together

__all__ = ["Trainer", "fit", "geometric_median", "train_together"]
