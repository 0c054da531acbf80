"""CE and KL recovered: how much of the model's behaviour survives splicing a dictionary.

CE recovered = (CE_ablated − CE_spliced) / (CE_ablated − CE_clean); KL recovered =
(KL_ablated − KL_spliced) / KL_ablated, with KL(P_clean ‖ Q) over the next-token
distribution; both for zero and mean ablation of the hook (the mean over the same
evaluated tokens). Averages run over positions whose input and target are real
tokens (not BOS, separators or padding), and position 0 is never replaced.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor


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


@torch.no_grad()
def ce_kl_recovered(model: Any, dictionary: Any, tokens: Tensor, batch_size: int = 16,
                    mask: Tensor | None = None, mean: Tensor | None = None) -> Recovered:
    """CE and KL recovered for splicing ``dictionary`` into ``model`` on ``tokens``.

    ``mean``: the hook's mean activation over the evaluated tokens, when the caller has
    already harvested them (it saves a pass); computed here otherwise.
    """
    from saekit.activations.harvest import model_device
    from saekit.data import token_mask
    from saekit.models import _check_dictionary_fits, splice

    hook = _check_dictionary_fits(model, dictionary)
    mask = token_mask(tokens, model) if mask is None else mask
    dev = model_device(model)
    if mean is None:  # mean ablation value: the hook's mean over the evaluated tokens
        from saekit.activations import iter_harvest

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

    sums = {k: 0.0 for k in ("ce_clean", "ce_spliced", "ce_zero", "ce_mean", "kl_spliced", "kl_zero", "kl_mean")}
    n = 0
    for i in range(0, len(tokens), batch_size):
        toks = tokens[i:i + batch_size].to(dev)
        valid = (mask[i:i + batch_size, :-1] & mask[i:i + batch_size, 1:]).to(dev)
        # Position 0 predicts the first real token from BOS: keep it, BOS is never replaced.
        valid |= mask[i:i + batch_size, 1:].to(dev) & (torch.arange(valid.shape[1], device=dev) == 0)
        target = toks[:, 1:]
        clean = model(toks)[:, :-1].float().log_softmax(-1)
        sums["ce_clean"] += _ce(clean, target, valid)
        for name, ctx in (("spliced", splice(model, dictionary)), ("zero", ablate(None)),
                          ("mean", ablate(mean.to(dev)))):
            with ctx:
                logp = model(toks)[:, :-1].float().log_softmax(-1)
            sums[f"ce_{name}"] += _ce(logp, target, valid)
            sums[f"kl_{name}"] += float((clean.exp() * (clean - logp)).sum(-1)[valid].sum())
        n += int(valid.sum())
    m = {k: v / max(n, 1) for k, v in sums.items()}

    def frac(num: float, den: float) -> float:
        return num / den if den != 0 else float("nan")

    return Recovered(
        **m,
        ce_recovered_zero=frac(m["ce_zero"] - m["ce_spliced"], m["ce_zero"] - m["ce_clean"]),
        ce_recovered_mean=frac(m["ce_mean"] - m["ce_spliced"], m["ce_mean"] - m["ce_clean"]),
        kl_recovered_zero=frac(m["kl_zero"] - m["kl_spliced"], m["kl_zero"]),
        kl_recovered_mean=frac(m["kl_mean"] - m["kl_spliced"], m["kl_mean"]),
        n_tokens=n,
    )


def _ce(logp: Tensor, target: Tensor, valid: Tensor) -> float:
    return float(-logp.gather(-1, target[..., None]).squeeze(-1)[valid].sum())
