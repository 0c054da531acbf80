"""``saekit.fit``: one entry for every dictionary kind, gradient-trained or fitted."""

from __future__ import annotations

from typing import Any

from saekit.dictionaries import Dictionary
from saekit.training.snmf import fit_snmf
from saekit.training.trainer import Trainer


def fit(data: Any, kind: str, d_dict: int, k: int | None = None, batch_size: int | None = None,
        seed: int = 0, hook: str | None = None, model: Any = None, out: Any = None, *,
        progress: bool = False, **kwargs: Any) -> Dictionary:
    """Train a dictionary of ``kind`` with ``d_dict`` features on ``data``: a tensor
    ``[n, d_in]`` or an activation-cache directory (one hook).

    ``n_tokens``/``epochs`` set the length of the run; without them a run is one pass
    over large data and several over small data, so that it takes at least 1,200 steps,
    with a batch that shrinks with the data when ``batch_size`` is not given
    (:func:`~saekit.training.schedule.default_schedule`). Writes nothing unless ``out`` is given (then the
    dictionary is saved there). Further keywords:
    ``lr`` (default from d_dict and the number of steps: :func:`~saekit.training.schedule.default_lr`), ``warmup_steps`` (default 5% of steps, at most 1000),
    ``decay_start`` (fraction of steps after which the lr decays linearly to 0),
    ``autocast`` (bf16 autocast for the forward and backward), ``compile``
    (``torch.compile`` the SAE's forward and loss),
    ``input_norm`` (``scalar`` or ``none``), ``b_dec_init`` (``geometric_median``,
    ``mean`` or ``zeros``), ``dead_tokens`` (tokens without firing after which a
    feature is dead for AuxK; default min(10M, a tenth of the run)), ``device``, and
    the kind's own hyperparameters (``aux_coefficient``, ``l1_coefficient``, ...).
    """
    if kind in ("snmf", "nmf"):  # fitted by exact alternating passes, not by gradient
        d = fit_snmf(data, d_dict, kind=kind, k=k, seed=seed, hook=hook, model=model, progress=progress, **kwargs)
        if out is not None:
            d.save(out)
        return d
    trainer = Trainer(data, kind, d_dict, k, batch_size, seed, hook, model, **kwargs)
    sae = trainer.run(progress=progress)
    if out is not None:
        sae.save(out)
    return sae
