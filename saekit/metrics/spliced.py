"""Evaluate a dictionary spliced into its model: CE/KL recovered and SAEBench's core
reconstruction metrics on the same tokens (BOS, separators and padding excluded).
A transcoder is scored on its output hook: FVU of the target, CE/KL recovered with the
output hook (e.g. the MLP's output) replaced by its prediction and ablated for the
baselines."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saekit.activations.harvest import iter_harvest, model_lock
from saekit.metrics import StreamingStats, ce_kl_recovered
from saekit.models import HookedModel, check_dictionary_fits


@torch.no_grad()
def evaluate(model: HookedModel, dictionary: Any, tokens: Tensor, batch_size: int = 16) -> dict[str, float]:
    """One flat dict: ``ce_recovered_zero``, ``kl_recovered_mean``, ... (each with a
    bootstrap SE over windows, ``ce_recovered_zero_se``, ...), ``fvu``, ``l0``,
    ``l2_ratio``, ``relative_reconstruction_bias``, ``cosine_similarity``, ``frac_dead``,
    ``frac_dense`` (firing above 10% of tokens)."""
    with model_lock(model):  # a live-harvest thread may share the model
        # One harvest pass gives the reconstruction metrics and the mean-ablation value.
        # A transcoder reads its input hook and is scored on (and ablated at) its output
        # hook; for an SAE both are cfg.hook.
        hook_in = dictionary.cfg.hook
        hook_out = check_dictionary_fits(model, dictionary)  # the output hook, checked first
        stats = StreamingStats()
        d = dictionary.W_dec
        total = torch.zeros(d.shape[1], dtype=torch.float64, device=d.device)
        for acts in iter_harvest(model, list(dict.fromkeys([hook_in, hook_out])), tokens, batch_size):
            x = acts[hook_in].to(d.device, d.dtype)
            y = acts[hook_out].to(d.device, d.dtype)
            total += y.double().sum(0)
            codes, y_hat = dictionary.reconstruct(x)  # a skip transcoder needs x too
            stats.update(y, y_hat, dictionary.active(codes))
        mean = (total / max(stats.n_tokens, 1)).float()
        rec = ce_kl_recovered(model, dictionary, tokens, batch_size=batch_size, mean=mean)
    out = rec._asdict()
    out["ce_positions"] = out.pop("n_tokens")
    se = out.pop("se")  # one flat dict: the recovered fractions' SEs as their own columns
    out.update({f"{k}_se": se[k] for k in ("ce_recovered_zero", "ce_recovered_mean",
                                           "kl_recovered_zero", "kl_recovered_mean")})
    return {**out, **stats.summary()}
