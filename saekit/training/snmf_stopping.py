"""When an SNMF fit stops (:func:`saekit.training.snmf.fit_snmf`).

Stopping. A fit ends at the first of (``cfg.metadata["stopped"]`` says which):

- ``"converged"``: from pass 10 on, the loss's elasticity with respect to the pass
  count over the last five passes,
  ``g_t = ln(L_{t−5} / L_t) / ln(t / (t−5))`` (``L`` the lowest loss so far), is below
  ``stop_gain`` (default 0.04), and those five passes brought at most a tenth of the
  fit's fall since its first pass, ``ln(L_{t−5} / L_t) <= 0.1 · ln(L_1 / L_t)``. At
  the current rate, running as many passes again would lower the loss by less than
  ``stop_gain · ln 2`` (2.8%; 1.4% of the error), and in fact by less, since the rate
  only falls. The second condition asks that the fit has clearly left its
  initialisation: a winner-take-all fit can creep for tens of passes before its
  supports settle (on a held-out 5,000 × 256 matrix at k = 64 and wta 0.01, the
  elasticity alone stopped one at pass 10, above the MU loop's 200-pass error; with
  the condition it runs on while its last passes are a large part of its progress);
- ``"stalled"``: ``patience`` passes in a row without a ``tol`` improvement;
- ``"max_iter"``: ``max_iter`` passes.

Why this rule. The loss curves have a long tail: on a held-out 10,000 × 512 matrix at
k = 128, the fit used to reach the MU loop's 200-pass error at pass 20 and then spend
77 more passes on the last 0.4% (issue 15). The elasticity is scale-free (a ratio of
losses, whatever the activations' scale), and it sets the bar by how far the fit has
come: a pass that gains 0.5% pays at pass 5 and not at pass 50. It is counted in
passes rather than seconds because passes of one fit cost the same time, so the two
elasticities agree (the initialisation aside), while a clock would make the stopping
pass, and so the dictionary, depend on the machine's load, and could stop the ranks
of a ``torchrun`` fit at different passes (every rank sees the same all-reduced loss,
so they stop together). ``stop_gain=0`` turns the rule off (the fitter's behaviour
before it: ``patience``/``tol``/``max_iter`` alone); a smaller value, such as 1e-3,
runs to a tighter fit. The default 0.04 was chosen on one set of synthetic matrices
and checked on others (``eval/bench_snmf_stopping.py``, which reports where it meets
the issue's target, at least 4× faster than the MU loop to its 200-pass error, and
where it does not).
"""

from __future__ import annotations

import math

#: Passes over which ``stop_gain`` measures the loss's fall, and the fewest passes before it may stop a fit.
GAIN_WINDOW, GAIN_MIN_PASSES = 5, 10
#: The largest share of the fit's fall in (log) loss since its first pass that the last
#: ``GAIN_WINDOW`` passes may have brought for ``stop_gain`` to stop it.
GAIN_SHARE = 0.1
#: Losses below this fraction of ``‖A‖²`` (relative error 1e-4, about the float32 statistics'
#: rounding) count as equal, so an exact fit stops rather than chase rounding.
GAIN_FLOOR = 1e-8


def stop_gain_value(lows: list[float], it: int, floor: float = 0.0,
                    window: int = GAIN_WINDOW) -> float | None:
    """The loss's elasticity with respect to the pass count over the last ``window`` passes,
    ``ln(L_{t−w} / L_t) / ln(t / (t−w))`` for the lowest losses ``lows`` (one per pass, the
    last being pass ``it``); None until ``window`` + 1 passes exist.

    It is the fraction by which the loss falls per fractional increase in passes (so
    in time, passes costing the same): at 0.04, running as many passes again at the
    current rate would lower the loss by about 0.04 · ln 2 = 2.8%, and by less in
    practice, as rates only fall. Scale-free (a ratio of losses), free of the pass's
    cost, and the same for a given loss curve on every machine and every rank.
    """
    if len(lows) <= window or it <= window:
        return None
    past, now = lows[-1 - window] + floor, lows[-1] + floor
    if now <= 0 or past <= 0:
        return None
    return math.log(past / now) / math.log(it / (it - window))


def converged(lows: list[float], it: int, stop_gain: float, floor: float = 0.0) -> bool:
    """The ``stop_gain`` rule (module docstring): from pass ``GAIN_MIN_PASSES``, the
    elasticity is below ``stop_gain`` and the last ``GAIN_WINDOW`` passes brought at most
    ``GAIN_SHARE`` of the fall in log loss since the first pass."""
    gain = stop_gain_value(lows, it, floor)
    if stop_gain <= 0 or it < GAIN_MIN_PASSES or gain is None or gain >= stop_gain:
        return False
    first, past, now = lows[0] + floor, lows[-1 - GAIN_WINDOW] + floor, lows[-1] + floor
    return math.log(past / now) <= GAIN_SHARE * math.log(first / now)
