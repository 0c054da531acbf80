"""Old name of :mod:`saekit.evals.layers`, kept as an alias for one release (issue 17 renamed it)."""

import sys

import saekit.evals.layers

sys.modules[__name__] = saekit.evals.layers
