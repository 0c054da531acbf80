"""Evaluate a dictionary spliced into its model: CE/KL recovered and SAEBench's core
reconstruction metrics on the same tokens (BOS, separators and padding excluded)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saekit.activations.harvest import iter_harvest, model_lock
from saekit.metrics import StreamingStats, ce_kl_recovered
from saekit.models import HookedModel


@torch.no_grad()
def evaluate(model: HookedModel, dictionary: Any, tokens: Tensor, batch_size: int = 16) -> dict[str, float]:
    """One flat dict: ``ce_recovered_zero``, ``kl_recovered_mean``, ... (each with a
    bootstrap SE over windows, ``ce_recovered_zero_se``, ...), ``fvu``, ``l0``,
    ``l2_ratio``, ``relative_reconstruction_bias``, ``cosine_similarity``, ``frac_dead``,
    ``frac_dense`` (firing above 10% of tokens)."""
    with model_lock(model):  # a live-harvest thread may share the model
        # One harvest pass gives the reconstruction metrics and the mean-ablation value.
        stats = StreamingStats()
        d = dictionary.W_dec
        total = torch.zeros(dictionary.cfg.d_in, dtype=torch.float64, device=d.device)
        for acts in iter_harvest(model, [dictionary.cfg.hook], tokens, batch_size):
            x = acts[dictionary.cfg.hook].to(d.device, d.dtype)
            total += x.double().sum(0)
            codes = dictionary.encode(x)
            stats.update(x, dictionary.decode(codes), dictionary.active(codes))
        mean = (total / max(stats.n_tokens, 1)).float()
        rec = ce_kl_recovered(model, dictionary, tokens, batch_size=batch_size, mean=mean)
    out = rec._asdict()
    out["ce_positions"] = out.pop("n_tokens")
    se = out.pop("se")  # one flat dict: the recovered fractions' SEs as their own columns
    out.update({f"{k}_se": se[k] for k in ("ce_recovered_zero", "ce_recovered_mean",
                                           "kl_recovered_zero", "kl_recovered_mean")})
    return {**out, **stats.summary()}
