"""Gemma Scope 2 (Gemma 3): JumpReLU SAEs and (skip) transcoders in ``params.safetensors``.

The releases (``google/gemma-scope-2-{270m,1b,4b,12b,27b}-{pt,it}``, as SAELens 6.54's
``gemma_3`` loader reads them) hold one folder per dictionary,
``{site}/layer_{L}_width_{W}_l0_{small|medium|big}[_affine]``, where ``site`` is
``resid_post``, ``mlp_out``, ``attn_out`` or ``transcoder`` (``*_all`` for the every-layer
sets), with ``params.safetensors`` (``w_enc [d_in, d_sae]``, ``w_dec [d_sae, d_out]``,
``b_enc``, ``b_dec``, ``threshold``, and ``affine_skip_connection [d_in, d_out]`` in the
``_affine`` transcoders) and sometimes a ``config.json``. The encoder reads raw ``x`` (no
``b_dec`` subtracted); codes are ``relu(pre) * (pre > threshold)``.

Hooks, from the folder (or the registry): a transcoder reads the output of the MLP's
pre-norm (HF ``pre_feedforward_layernorm``) and predicts the output of its post-norm
(``post_feedforward_layernorm``), which are saekit's ``blocks.L.ln2.hook_out`` and
``blocks.L.hook_mlp_out``. SAELens names the input ``hook_mlp_in``, which in
TransformerLens is the residual stream *before* that norm; saekit names the hook the
transcoder was trained on, so that splicing it reads the right activation.
"""

from __future__ import annotations

import re
from pathlib import Path

from saekit.dictionaries.base import Dictionary
from saekit.formats.files import (
    FormatError,
    build,
    matrix,
    need,
    read_json,
    read_safetensors,
    shapes,
)

#: Site folder -> (input hook, output hook or None); ``{}`` is the layer.
SITES = {
    "transcoder": ("blocks.{}.ln2.hook_out", "blocks.{}.hook_mlp_out"),
    "resid_post": ("blocks.{}.hook_resid_post", None),
    "mlp_out": ("blocks.{}.hook_mlp_out", None),
    "attn_out": ("blocks.{}.attn.hook_z", None),
}


def site_hooks(folder: Path) -> tuple[str | None, str | None, bool]:
    """``(hook, hook_out, transcoder)`` named by a Gemma Scope 2 folder path
    (``{site}[_all]/layer_{L}_...``); hooks None where the path does not say (the registry
    states them then)."""
    parts = [p.lower() for p in folder.resolve().parts]
    layer = next((m.group(1) for p in reversed(parts) if (m := re.match(r"layer_(\d+)", p))), None)
    site = next((s for p in reversed(parts) for s in SITES if p in (s, s + "_all")), None)
    transcoder = site == "transcoder"
    if site is None or layer is None:
        return None, None, transcoder
    hook, hook_out = SITES[site]
    return hook.format(layer), hook_out.format(layer) if hook_out else None, transcoder


def read_gemma_scope_2(path: Path, fold: bool = True) -> Dictionary:
    """A Gemma Scope 2 folder (or its ``params.safetensors``): a JumpReLU SAE, transcoder or
    skip transcoder (``affine_skip_connection`` present), with no ``b_dec`` subtracted from
    the input."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    file = folder / "params.safetensors"
    t = read_safetensors(file)
    need(t, ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"], file)
    d_in, d_sae = matrix(t, "w_enc", file)
    hook, hook_out, transcoder = site_hooks(folder)
    cfg_file = folder / "config.json"
    if cfg_file.is_file():
        cfg = read_json(cfg_file)
        arch = cfg.get("architecture")
        if arch != "jump_relu":
            raise FormatError(f"{cfg_file}: architecture {arch!r}; Gemma Scope 2 releases are 'jump_relu'")
        transcoder = transcoder or "hf_hook_point_out" in cfg
    skip = "affine_skip_connection" in t
    if skip and not transcoder:
        raise FormatError(f"{file}: has affine_skip_connection, but the folder does not name a transcoder "
                          "('transcoder/...'); saekit reads skip terms on transcoders only")
    d_out = t["w_dec"].shape[-1] if t["w_dec"].ndim == 2 else None
    transcoder = transcoder or (hook is None and d_out != d_in)  # a folder that does not say: the shapes do
    if not transcoder and d_out != d_in:
        raise FormatError(f"{file}: w_dec has shape {tuple(t['w_dec'].shape)}, expected [{d_sae}, {d_in}] "
                          "(an SAE; transcoders live under 'transcoder/')")
    shapes(t, {"w_dec": (d_sae, d_out), "b_enc": (d_sae,), "b_dec": (d_out,), "threshold": (d_sae,),
               **({"affine_skip_connection": (d_in, d_out)} if skip else {})}, file)
    tensors = {"W_enc": t["w_enc"], "W_dec": t["w_dec"], "b_enc": t["b_enc"], "b_dec": t["b_dec"],
               "threshold": t["threshold"]}
    if skip:  # stored [d_in, d_out]; saekit's W_skip is [d_out, d_in]
        tensors["W_skip"] = t["affine_skip_connection"].T.contiguous()
    return build("jumprelu", tensors, file, hook=hook, processing="raw", fold=fold,
                 options={"apply_b_dec_to_input": False, **({"skip": True} if skip else {})},
                 metadata={"source_format": "gemma_scope_2"}, transcoder=transcoder,
                 hook_out=hook_out if transcoder else None)
