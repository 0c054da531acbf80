"""CE and KL recovered: how much of the model's behaviour survives splicing a dictionary.

CE recovered = (CE_ablated − CE_spliced) / (CE_ablated − CE_clean); KL recovered =
(KL_ablated − KL_spliced) / KL_ablated, with KL(P_clean ‖ Q) over the next-token
distribution; both for zero and mean ablation of the hook (the mean over the same
evaluated tokens). Averages run over positions whose input and target are real
tokens (not BOS, separators or padding), and position 0 is never replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from saekit.activations import iter_harvest
from saekit.data import token_mask
from saekit.metrics.uncertainty import bootstrap_se
from saekit.models import HookedModel, check_dictionary_fits, model_device, splice


class Recovered(NamedTuple):
    """CE/KL of the clean, spliced and ablated model, and the recovered fractions."""

    ce_clean: float
    """Next-token cross-entropy of the untouched model (nats)."""
    ce_spliced: float
    """Cross-entropy with the hook replaced by the dictionary's reconstruction."""
    ce_zero: float
    """Cross-entropy with the hook zeroed."""
    ce_mean: float
    """Cross-entropy with the hook replaced by its mean activation."""
    kl_spliced: float
    """KL(P_clean ‖ P_spliced) per token."""
    kl_zero: float
    """KL(P_clean ‖ P_zero-ablated) per token."""
    kl_mean: float
    """KL(P_clean ‖ P_mean-ablated) per token."""
    ce_recovered_zero: float
    """(ce_zero − ce_spliced) / (ce_zero − ce_clean)."""
    ce_recovered_mean: float
    """(ce_mean − ce_spliced) / (ce_mean − ce_clean)."""
    kl_recovered_zero: float
    """(kl_zero − kl_spliced) / kl_zero."""
    kl_recovered_mean: float
    """(kl_mean − kl_spliced) / kl_mean."""
    n_tokens: int
    """Positions averaged over."""
    n_windows: int = 0
    """Windows evaluated (the unit of the standard errors)."""
    se: dict[str, float] = {}
    """Bootstrap standard error over windows of every field above (same names)."""

    def interval(self, name: str, z: float = 1.96) -> tuple[float, float]:
        """Normal interval ``value ± z·SE`` of a field (95% by default)."""
        v, e = getattr(self, name), self.se.get(name, float("nan"))
        return v - z * e, v + z * e


def ce_kl_recovered(model: HookedModel, dictionary: Any, tokens: Tensor, batch_size: int = 16,
                    mask: Tensor | None = None, mean: Tensor | None = None) -> Recovered:
    """CE and KL recovered for splicing ``dictionary`` into ``model`` on ``tokens``, with
    bootstrap standard errors over windows (``Recovered.se``).

    ``mean``: the hook's mean activation over the evaluated tokens, when the caller has
    already harvested them (it saves a pass); computed here otherwise.
    """
    return ce_kl_recovered_all(model, [dictionary], tokens, batch_size, mask, mean)[0]


@torch.no_grad()
def ce_kl_recovered_all(model: HookedModel, dictionaries: Sequence[Any], tokens: Tensor, batch_size: int = 16,
                        mask: Tensor | None = None, mean: Tensor | None = None) -> list[Recovered]:
    """:func:`ce_kl_recovered` for several dictionaries on one hook, sharing the clean
    and ablated forward passes (3 + one per dictionary instead of four per dictionary)."""
    hooks = {check_dictionary_fits(model, d) for d in dictionaries}
    if len(hooks) != 1:
        raise ValueError(f"ce_kl_recovered_all: the dictionaries must share one hook, got {sorted(hooks)}")
    hook = hooks.pop()
    mask = token_mask(tokens, model) if mask is None else mask
    dev = model_device(model)
    if mean is None:  # mean ablation value: the hook's mean over the evaluated tokens
        total, count = None, 0
        for acts in iter_harvest(model, [hook], tokens, batch_size, mask=mask):
            s = acts[hook].double().sum(0)
            total = s if total is None else total + s
            count += len(acts[hook])
        mean = (total / max(count, 1)).float()

    def ablate(value: Tensor | None):
        def fn(x: Tensor, hook: Any = None) -> Tensor:
            new = torch.zeros_like(x) if value is None else value.to(x.dtype).expand(*x.shape[:2], -1).reshape(x.shape).clone()
            new[:, 0] = x[:, 0]
            return new
        return model.hooks(fwd_hooks=[(hook, fn)])

    # Per window, the sums of _QUANTITIES and the count, one table per dictionary; the
    # clean and ablated columns are computed once and shared.
    per_window = torch.zeros(len(dictionaries), len(tokens), len(_QUANTITIES) + 1, dtype=torch.float64)
    for i in range(0, len(tokens), batch_size):
        toks = tokens[i:i + batch_size].to(dev)
        valid = (mask[i:i + batch_size, :-1] & mask[i:i + batch_size, 1:]).to(dev)
        # Position 0 predicts the first real token from BOS: keep it, BOS is never replaced.
        valid |= mask[i:i + batch_size, 1:].to(dev) & (torch.arange(valid.shape[1], device=dev) == 0)
        target = toks[:, 1:]
        rows = per_window[:, i:i + batch_size]
        clean = model(toks)[:, :-1].float().log_softmax(-1)
        p_clean = clean.exp()
        rows[:, :, 0] = _ce(clean, target, valid)
        # Columns follow _QUANTITIES: ce_clean, ce_{spliced,zero,mean}, kl_{spliced,zero,mean};
        # the ablations fill every dictionary's table, a splice its own.
        runs = [(ablate(None), slice(None), 2), (ablate(mean.to(dev)), slice(None), 3)]
        runs += [(splice(model, d), di, 1) for di, d in enumerate(dictionaries)]
        for ctx, which, col in runs:
            with ctx:
                logp = model(toks)[:, :-1].float().log_softmax(-1)
            rows[which, :, col] = _ce(logp, target, valid)
            rows[which, :, col + 3] = ((p_clean * (clean - logp)).sum(-1) * valid).double().sum(1).cpu()
        rows[:, :, -1] = valid.sum(1).double().cpu()
    names = [*_QUANTITIES, *_FRACTIONS]
    out = []
    for table in per_window:
        values = _recovered(table.sum(0, keepdim=True))[0].tolist()
        se = bootstrap_se(_recovered, table).tolist()
        out.append(Recovered(**dict(zip(names, values, strict=True)), n_tokens=int(table[:, -1].sum()),
                             n_windows=len(tokens), se=dict(zip(names, se, strict=True))))
    return out


_QUANTITIES = ("ce_clean", "ce_spliced", "ce_zero", "ce_mean", "kl_spliced", "kl_zero", "kl_mean")
_FRACTIONS = ("ce_recovered_zero", "ce_recovered_mean", "kl_recovered_zero", "kl_recovered_mean")


def _recovered(totals: Tensor) -> Tensor:
    """``[..., 8]`` sums (7 quantities, count) -> ``[..., 11]`` means and recovered fractions."""
    m = totals[..., :7] / totals[..., 7:].clamp_min(1)
    ce_clean, ce_spliced, ce_zero, ce_mean, kl_spliced, kl_zero, kl_mean = m.unbind(-1)

    def frac(num: Tensor, den: Tensor) -> Tensor:
        return torch.where(den != 0, num / den, torch.nan)

    return torch.cat([m, torch.stack([frac(ce_zero - ce_spliced, ce_zero - ce_clean),
                                      frac(ce_mean - ce_spliced, ce_mean - ce_clean),
                                      frac(kl_zero - kl_spliced, kl_zero),
                                      frac(kl_mean - kl_spliced, kl_mean)], -1)], -1)


def _ce(logp: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Summed next-token CE of each window, ``[batch]`` float64 on the CPU."""
    return (-logp.gather(-1, target[..., None]).squeeze(-1) * valid).double().sum(1).cpu()
