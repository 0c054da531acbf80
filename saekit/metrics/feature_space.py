"""Where two dictionaries' feature directions can be compared, and what chance gives.

A feature's direction lives in its hook's basis; :func:`residual_directions` maps
MLP-hidden features into the residual stream (through ``W_out``), :func:`common_space`
says whether two hooks share a space, and :func:`chance_matched_cos` is the matched
|cos| that random directions of the same shapes reach. Used by :mod:`saekit.compare`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saekit.metrics.reconstruction import match, unit_rows
from saekit.models import HookedModel, W_out, validate_hook

#: Hooks already in the residual-stream basis.
RESIDUAL_KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_mlp_out")


def residual_directions(dictionary: Any, model: HookedModel) -> Tensor:
    """Unit feature directions in the residual stream, ``[d_dict, d_model]``.

    A dictionary on ``blocks.L.mlp.hook_post`` maps through the MLP's output matrix
    (``W_dec @ W_out``: what a feature writes into the residual stream); residual-basis
    hooks (``hook_resid_pre|mid|post``, ``hook_mlp_out``) are there already; any other
    hook raises ValueError. The hook is the one ``W_dec`` writes to: a transcoder's
    output hook (``cfg.output_hook``), an SAE's own.
    """
    hook = _decoder_hook(dictionary)
    layer, kind = validate_hook(model, hook)
    w = dictionary.W_dec.detach().float()
    if kind == "mlp.hook_post":
        w = w @ W_out(model, layer).to(w.device, w.dtype)
    elif kind not in RESIDUAL_KINDS:
        raise ValueError(f"{hook}: no map into the residual stream")
    return unit_rows(w)


def _decoder_hook(dictionary: Any) -> str:
    """Where ``W_dec``'s rows live: ``cfg.output_hook`` (a transcoder's output) or ``cfg.hook``."""
    return getattr(dictionary.cfg, "output_hook", None) or dictionary.cfg.hook


def common_space(hook_a: str, hook_b: str, model: HookedModel) -> tuple[str | None, str]:
    """``(space, "")`` where two hooks' directions can be compared, or ``(None, reason)``.

    MLP-hidden dictionaries (``mlp.hook_post``) always compare in the residual stream,
    through ``W_out`` (as the issue and the SNMF paper's f = W_out z have it), even on one
    hook: what a feature writes is what the model sees; directions that differ only in
    ``W_out``'s null space count as the same. Any other hook compares in its own space.
    Otherwise both hooks must map into the residual stream at the same layer
    (TransformerLens' block index).
    """
    if hook_a == hook_b and not hook_a.endswith("mlp.hook_post"):
        return hook_a, ""
    (la, ka), (lb, kb) = validate_hook(model, hook_a), validate_hook(model, hook_b)
    for hook, kind in ((hook_a, ka), (hook_b, kb)):
        if kind != "mlp.hook_post" and kind not in RESIDUAL_KINDS:
            return None, f"{hook} has no map into the residual stream"
    if la != lb:
        return None, f"different layers ({la} vs {lb}): features at different depths are not matched"
    return f"residual stream, layer {la}", ""


_CHANCE: dict[tuple[int, int, int], float] = {}


def chance_matched_cos(n_a: int, n_b: int, d: int) -> float:
    """Mean matched |cos| of seeded random directions of these shapes: what matching
    reaches with no shared structure at all (high when d is small)."""
    if (n_a, n_b, d) not in _CHANCE:
        g = torch.Generator().manual_seed(0)
        m = match(torch.randn(n_a, d, generator=g), torch.randn(n_b, d, generator=g))
        _CHANCE[n_a, n_b, d] = m.cos.mean().item()
    return _CHANCE[n_a, n_b, d]
