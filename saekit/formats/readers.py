"""Readers for other libraries' checkpoints, each giving a saekit :class:`Dictionary`.

Every reader maps the file's tensors onto saekit's orientation (``W_enc [d_in, d_dict]``,
``W_dec [d_dict, d_in]``) and reproduces the library's own encode and decode: which bias
is subtracted from the input, where the ReLU sits, the threshold rule, the per-token
LayerNorm. ``tests/fixtures/formats`` holds files written by the real libraries with
their outputs, and ``tests/test_formats.py`` checks each reader against them.

Decoder norms. saekit's convention is unit-norm ``W_dec`` rows with the codes carrying
the scale. Where moving the norms into the encoder changes nothing but the codes' scale
(ReLU, JumpReLU, BatchTopK thresholds, gated, and SAELens' TopK with
``rescale_acts_by_decoder_norm``), readers fold them, so a loaded dictionary
reconstructs exactly as the original and its codes are the library's codes times
‖W_dec,i‖ (equal to them when the rows were unit-norm already). A plain TopK keeps its
norms: scaling pre-activations by different norms would change which k are kept.
``fold_decoder_norms=False`` keeps every file's own parametrisation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saekit.dictionaries.base import Dictionary, DictionaryConfig


class FormatError(ValueError):
    """A checkpoint that cannot be read: the message names the file and the problem."""


# -- safe file access ---------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(out, dict):
        raise FormatError(f"{path}: expected a JSON object, got {type(out).__name__}")
    return out


def read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FormatError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for truncated/corrupt files
        raise FormatError(f"{path}: not a readable safetensors file ({e})") from e


def read_pt(path: Path) -> dict[str, Any]:
    """A ``.pt`` state dict through ``torch.load(weights_only=True)`` only: a pickle that
    needs anything beyond tensors and plain containers is refused and never runs."""
    # torch's weights-only unpickler raises pickle's UnpicklingError; reached through
    # torch.serialization so that saekit itself never imports pickle.
    refused = torch.serialization.pickle.UnpicklingError
    try:
        out = torch.load(path, map_location="cpu", weights_only=True)
    except refused as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
        raise FormatError(f"{path}: refused: this pickle needs more than tensors to load, and saekit "
                          f"only reads .pt files with torch.load(weights_only=True) ({first})") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a readable torch checkpoint ({e})") from e
    if not isinstance(out, dict):
        raise FormatError(f"{path}: expected a state dict, got {type(out).__name__}")
    return out


def read_npz(path: Path) -> dict[str, Tensor]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: torch.from_numpy(np.ascontiguousarray(f[k])) for k in f.files}
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except Exception as e:  # zipfile/np errors for truncated or non-npz files; pickled arrays
        raise FormatError(f"{path}: not a readable .npz of arrays ({e})") from e


def need(tensors: dict[str, Any], names: list[str], where: Path) -> None:
    missing = [n for n in names if not isinstance(tensors.get(n), Tensor)]
    if missing:
        have = sorted(k for k, v in tensors.items() if isinstance(v, Tensor))
        raise FormatError(f"{where}: missing tensor(s) {missing}; it has {have}")


# -- building a saekit dictionary ------------------------------------------------------


def build(kind: str, tensors: dict[str, Tensor], where: Path, *, k: int | None = None, hook: str | None = None,
          model: str | None = None, processing: str | None = None, input_norm: str = "none",
          options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
          fold: bool = True, rescale: bool = False) -> Dictionary:
    """A ``kind`` dictionary holding ``tensors`` (saekit names and orientation, float32).

    ``rescale``: the file's codes are the pre-activations times ‖W_dec,i‖ (SAELens'
    ``rescale_acts_by_decoder_norm``), which folding makes exact for any kind.
    """
    from saekit.dictionaries import REGISTRY

    for name, t in tensors.items():
        if not t.is_floating_point():
            raise FormatError(f"{where}: tensor {name!r} has dtype {t.dtype}, expected a floating-point dtype")
    W_dec = tensors["W_dec"]
    if W_dec.ndim != 2:
        raise FormatError(f"{where}: W_dec must be 2-D [d_dict, d_in], got shape {tuple(W_dec.shape)}")
    d_dict, d_in = W_dec.shape
    try:
        cfg = DictionaryConfig(kind=kind, d_in=d_in, d_dict=d_dict, k=k, hook=hook, model=model,
                               processing=processing, input_norm=input_norm, options=options or {},
                               metadata=dict(metadata or {}))
    except ValueError as e:
        raise FormatError(f"{where}: {e}") from e
    d = REGISTRY[kind](cfg)
    d.load_tensors({n: t.float() for n, t in tensors.items()}, where=str(where))
    if rescale or (fold and kind != "topk"):
        norms = d.W_dec.detach().norm(dim=1)
        if rescale or not torch.allclose(norms, torch.ones_like(norms), atol=1e-6):
            d.normalize_decoder()
        cfg.metadata["decoder_norms_folded"] = True
    return d


def _int(value: Any, field: str, where: Path) -> int:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FormatError(f"{where}: field {field!r} must be a positive integer, got {value!r}")
    return value


# -- hook names of other libraries -> TransformerLens ------------------------------------

_HF_HOOKS = [  # HF module paths (sparsify hookpoints) -> TransformerLens hook names
    (r"(?:layers\.|h\.|layer_)(\d+)", "blocks.{}.hook_resid_post"),
    (r"(?:layers|h)\.(\d+)\.mlp", "blocks.{}.hook_mlp_out"),
    (r"(?:layers|h)\.(\d+)\.mlp\.(?:act|act_fn)", "blocks.{}.mlp.hook_post"),
    (r"(?:layers|h)\.(\d+)\.(?:attn|self_attn|attention)", "blocks.{}.hook_attn_out"),
]
_DL_HOOKS = {"resid_post": "blocks.{}.hook_resid_post", "resid_pre": "blocks.{}.hook_resid_pre",
             "mlp_out": "blocks.{}.hook_mlp_out", "attn_out": "blocks.{}.hook_attn_out"}


def tl_hook_from_module(name: str) -> str | None:
    """``layers.3.mlp`` -> ``blocks.3.hook_mlp_out`` (None when not recognised)."""
    bare = re.sub(r"^(?:model|transformer|gpt_neox|base_model\.model)\.", "", name)
    for pattern, hook in _HF_HOOKS:
        m = re.fullmatch(pattern, bare)
        if m:
            return hook.format(m.group(1))
    return None


# -- the readers -----------------------------------------------------------------------

_SAELENS_KINDS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}


def read_saelens(path: Path, fold: bool = True) -> Dictionary:
    """SAELens directory: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``)."""
    cfg = read_json(path / "cfg.json")
    arch = cfg.get("architecture", "standard")
    if arch not in _SAELENS_KINDS:
        raise FormatError(f"{path / 'cfg.json'}: architecture {arch!r} is not supported; "
                          f"saekit reads {sorted(_SAELENS_KINDS)}")
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm not in ("none", "expected_average_only_in", "layer_norm"):
        raise FormatError(f"{path / 'cfg.json'}: normalize_activations {norm!r} has no saekit equivalent "
                          "(saekit maps 'none', 'layer_norm' and a folded 'expected_average_only_in')")
    where = path / "sae_weights.safetensors"
    t = read_safetensors(where)
    kind = _SAELENS_KINDS[arch]
    names = ["W_enc", "W_dec", "b_dec"] + (["b_gate", "b_mag", "r_mag"] if kind == "gated" else ["b_enc"])
    need(t, names + (["threshold"] if kind == "jumprelu" else []), where)
    for field, dim in (("d_in", 1), ("d_sae", 0)):
        if field in cfg and t["W_dec"].ndim == 2 and cfg[field] != t["W_dec"].shape[dim]:
            raise FormatError(f"{where}: W_dec has shape {tuple(t['W_dec'].shape)}, but cfg.json says "
                              f"{field}={cfg[field]}")
    if "scaling_factor" in t:  # older SAELens fine-tuning scale on the codes: fold it into W_dec
        t["W_dec"] = t["W_dec"] * t.pop("scaling_factor").reshape(-1, 1)
    md = cfg.get("metadata") or {}
    hook, model = md.get("hook_name", cfg.get("hook_name")), md.get("model_name", cfg.get("model_name"))
    meta = {"source_format": "saelens", "sae_lens_version": md.get("sae_lens_version")}
    if md.get("training_architecture"):
        meta["training_architecture"] = md["training_architecture"]
    k = None
    if kind == "topk":
        k = _int(cfg.get("k"), "k", path / "cfg.json")
    elif kind == "jumprelu" and md.get("training_architecture") == "batchtopk":
        kind = "batchtopk"  # SAELens saves BatchTopK as a JumpReLU with a constant threshold
        detail = md.get("training_architecture_details") or {}
        k = _int(detail.get("k"), "metadata.training_architecture_details.k", path / "cfg.json")
    d = build(kind, {n: t[n] for n in names + (["threshold"] if "threshold" in t else []) if n in t}, where,
              k=k, hook=hook, model=model, processing="hooked", options={
                  "apply_b_dec_to_input": bool(cfg.get("apply_b_dec_to_input", True))},
              input_norm="layer_norm" if norm == "layer_norm" else "none", metadata=meta, fold=fold,
              rescale=bool(cfg.get("rescale_acts_by_decoder_norm")) and kind == "topk")
    if (path / "sparsity.safetensors").is_file():
        s = read_safetensors(path / "sparsity.safetensors")
        need(s, ["sparsity"], path / "sparsity.safetensors")
        d.log_firing_freq = s["sparsity"].float().reshape(-1)
    return d


def read_sparsify(path: Path, fold: bool = True) -> Dictionary:
    """EleutherAI sparsify hookpoint directory: ``cfg.json`` + ``sae.safetensors``."""
    cfg = read_json(path / "cfg.json")
    if cfg.get("activation", "topk") != "topk":
        raise FormatError(f"{path / 'cfg.json'}: activation {cfg.get('activation')!r}; saekit reads topk")
    for flag in ("transcode", "skip_connection"):
        if cfg.get(flag):
            raise FormatError(f"{path / 'cfg.json'}: {flag}=true (a transcoder or skip connection) "
                              "is not a dictionary of this hook's activations; saekit does not read it")
    where = path / "sae.safetensors"
    t = read_safetensors(where)
    need(t, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], where)
    tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    run = path.parent / "config.json"  # the trainer's run config, when the run directory is intact
    model = read_json(run).get("model") if run.is_file() else None
    # sparsify keeps the top-k of the ReLU'd pre-activations; SAELens-style top-k then
    # ReLU keeps the same codes (when fewer than k are positive both pad with zeros).
    return build("topk", tensors, where, k=_int(cfg.get("k"), "k", path / "cfg.json"),
                 hook=tl_hook_from_module(path.name), model=model, processing="raw",
                 metadata={"source_format": "sparsify", "source_hook": path.name}, fold=fold)


def read_dictionary_learning(path: Path, fold: bool = True) -> Dictionary:
    """saprmarks/dictionary_learning: ``ae.pt`` (nn.Linear orientation) + ``config.json``."""
    cfg = read_json(path / "config.json")
    tr = cfg.get("trainer")
    if not isinstance(tr, dict) or "dict_class" not in tr:
        raise FormatError(f"{path / 'config.json'}: no trainer.dict_class; not a dictionary_learning config")
    where = path / "ae.pt"
    t = read_pt(where)
    cls = tr["dict_class"]
    hook = None
    m = re.fullmatch(r"(resid_post|resid_pre|mlp_out|attn_out)_layer_(\d+)", str(tr.get("submodule_name", "")))
    if m:
        hook = _DL_HOOKS[m.group(1)].format(m.group(2))
    common = {"hook": hook, "model": tr.get("lm_name"), "processing": "raw", "fold": fold,
              "metadata": {"source_format": "dictionary_learning", "dict_class": cls,
                           "source_hook": tr.get("submodule_name")}}
    if cls == "AutoEncoder":
        need(t, ["bias", "encoder.weight", "encoder.bias", "decoder.weight"], where)
        return build("relu", {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"],
                              "W_dec": t["decoder.weight"].T, "b_dec": t["bias"]}, where, **common)
    if cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        need(t, ["b_dec", "encoder.weight", "encoder.bias", "decoder.weight", "threshold"], where)
        k = _int(t.get("k", tr.get("k")), "k", where)
        tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"], "W_dec": t["decoder.weight"].T,
                   "b_dec": t["b_dec"]}
        if cls == "AutoEncoderTopK":  # its default encode is a per-token top-k (the threshold is opt-in)
            return build("topk", tensors, where, k=k, **common)
        # BatchTopKSAE encodes with its scalar threshold on the ReLU'd pre-activations;
        # a negative one cuts nothing, exactly as a zero one does here.
        tensors["threshold"] = t["threshold"].float().clamp_min(0).expand(tensors["b_enc"].shape).clone()
        return build("batchtopk", tensors, where, k=k, **common)
    if cls == "JumpReluAutoEncoder":
        need(t, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], where)
        # relu(pre·[pre > θ]) equals saekit's relu(pre)·[pre > θ]; b_dec is not subtracted.
        return build("jumprelu", {n: t[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}, where,
                     options={"apply_b_dec_to_input": False}, **common)
    raise FormatError(f"{path / 'config.json'}: dict_class {cls!r} is not supported; saekit reads "
                      "AutoEncoder, AutoEncoderTopK, BatchTopKSAE and JumpReluAutoEncoder")


def read_gemma_scope(path: Path, fold: bool = True) -> Dictionary:
    """Gemma Scope ``params.npz``: a JumpReLU whose encoder sees raw x (no b_dec subtracted).
    The hook comes from the folder names (``layer_N`` under a ``-res``/``-mlp``/``-att``
    repository) when they say it; the registry states it otherwise."""
    t = read_npz(path)
    need(t, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], path)
    parts = [p.lower() for p in path.resolve().parts]
    layer = next((m.group(1) for p in reversed(parts) if (m := re.fullmatch(r"layer_(\d+)", p))), None)
    hooks = {"-res": "blocks.{}.hook_resid_post", "-mlp": "blocks.{}.hook_mlp_out", "-att": "blocks.{}.attn.hook_z"}
    site = next((s for p in parts for s in hooks if s in p), None)
    hook = hooks[site].format(layer) if layer is not None and site else None
    return build("jumprelu", {n: t[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}, path,
                 hook=hook, processing="raw", options={"apply_b_dec_to_input": False}, fold=fold,
                 metadata={"source_format": "gemma_scope"})


def read_openai(path: Path, fold: bool = True) -> Dictionary:
    """openai/sparse_autoencoder state dict (``.pt``): TopK with a per-token LayerNorm of
    the input, undone after decoding (``input_norm="layer_norm"``)."""
    t = read_pt(path)
    need(t, ["pre_bias", "latent_bias", "encoder.weight", "decoder.weight"], path)
    act = t.get("activation", "TopK")
    if act != "TopK":
        raise FormatError(f"{path}: activation {act!r}; saekit reads OpenAI's TopK autoencoders")
    state = t.get("activation_state_dict") or {}
    k = _int(state.get("k"), "activation_state_dict.k", path)
    return build("topk", {"W_enc": t["encoder.weight"].T, "b_enc": t["latent_bias"],
                          "W_dec": t["decoder.weight"].T, "b_dec": t["pre_bias"]}, path,
                 k=k, processing="raw", input_norm="layer_norm", fold=fold, metadata={"source_format": "openai"})
