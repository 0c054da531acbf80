"""``saekit.fit``: one entry for every dictionary kind, gradient-trained or fitted."""

from __future__ import annotations

import inspect
from typing import Any

from saekit.activations.stream import as_rows
from saekit.dictionaries import REGISTRY, Dictionary
from saekit.models import hook_width, model_name
from saekit.training.snmf import fit_snmf
from saekit.training.trainer import Trainer

#: Kinds fitted by exact alternating passes (:func:`fit_snmf`), not by gradient.
FITTED = ("snmf", "nmf")


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
    feature is dead for AuxK; default: :func:`~saekit.training.schedule.default_dead_tokens`), ``device``, and
    the kind's own hyperparameters (``aux_coefficient``, ``l1_coefficient``, ...).

    Transcoders: ``target`` (a ``[n, d_out]`` tensor, row i the activation the model
    produced at the output hook on the token of ``data``'s row i) makes an SAE kind a
    transcoder from ``data`` to ``target``; ``hook_out`` records the output hook (checked
    against ``model`` like ``hook``); ``skip=True`` adds the skip term ``x W_skipᵀ``.
    Every SAE kind can transcode; SNMF and NMF cannot.

    >>> tc = saekit.fit(x, kind="topk", d_dict=4096, k=32, target=y, skip=True)   # doctest: +SKIP

    Checked before any work: ``kind``, every keyword (an unknown one is an error that
    lists all of ``fit``'s keywords for that kind), and, when ``model`` is a loaded
    model and ``hook`` is given, that the hook exists and its width is the data's.
    """
    if kind not in REGISTRY:
        raise ValueError(f"unknown dictionary kind {kind!r}; available: {sorted(REGISTRY)}")
    if kind in FITTED and (kwargs.get("target") is not None or kwargs.get("hook_out") is not None):
        raise ValueError(f"kind {kind!r} cannot be a transcoder (target=/hook_out=); train one of the SAE "
                         "kinds (relu, topk, batchtopk, jumprelu, matryoshka_topk, matryoshka_batchtopk)")
    check_keywords(kind, kwargs)
    data = as_rows(data)
    if model is not None and not isinstance(model, str):
        target = kwargs.get("target")
        for h, rows, what in ((hook, data, "data has d_in"), (kwargs.get("hook_out"), target, "target has d_out")):
            if h is None:
                continue
            width = hook_width(model, h)  # an unknown hook raises here, listing the valid ones
            if getattr(rows, "ndim", 0) == 2 and rows.shape[1] != width:
                raise ValueError(f"hook {h!r} of {model_name(model)} has width {width}, but the {what}="
                                 f"{rows.shape[1]} (shape {tuple(rows.shape)}): activations of "
                                 "another hook or model?")
    if kind in FITTED:
        d = fit_snmf(data, d_dict, kind=kind, k=k, seed=seed, hook=hook, model=model, progress=progress, **kwargs)
        if out is not None:
            d.save(out)
        return d
    trainer = Trainer(data, kind, d_dict, k, batch_size, seed, hook, model, **kwargs)
    sae = trainer.run(progress=progress)
    if out is not None:
        sae.save(out)
    return sae


def fit_keywords(kind: str) -> tuple[list[str], list[str]]:
    """``(trainer keywords, the kind's options)`` that :func:`fit` accepts for ``kind``."""
    own = [p for p in inspect.signature(fit).parameters if p not in ("kwargs", "data", "kind")]
    runner = fit_snmf if kind in FITTED else Trainer.__init__
    extra = [p.name for p in inspect.signature(runner).parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("self", "data")]
    return sorted(set(own) | set(extra)), sorted(REGISTRY[kind].OPTIONS)


def check_keywords(kind: str, kwargs: dict[str, Any]) -> None:
    """A ValueError naming every unknown keyword and listing all valid ones for ``kind``."""
    trainer, options = fit_keywords(kind)
    unknown = sorted(set(kwargs) - set(trainer) - set(options))
    if unknown:
        how = "fitting" if kind in FITTED else "training"
        raise ValueError(f"fit() got unknown keyword(s) {unknown} for kind {kind!r}. Valid keywords: "
                         f"{how}: {', '.join(trainer)}; {kind} options: {', '.join(options)}")
