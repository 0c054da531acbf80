"""Old name of :mod:`saekit.metrics.spliced`, kept as an alias for one release (issue 17 renamed it)."""

import sys

import saekit.metrics.spliced

sys.modules[__name__] = saekit.metrics.spliced
