"""Old name of :mod:`saekit.evals.interventions`, kept as an alias for one release (issue 17 renamed it)."""

import sys

import saekit.evals.interventions

sys.modules[__name__] = saekit.evals.interventions
