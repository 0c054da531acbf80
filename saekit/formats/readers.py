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

import re
from pathlib import Path
from typing import Any

from saekit.dictionaries.base import (
    Dictionary,
    FormatError,
    check_tensor,
)
from saekit.dictionaries.sae import SAE  # noqa: F401  (importing the kinds registers them in REGISTRY)
from saekit.dictionaries.snmf import SNMF  # noqa: F401
from saekit.formats.files import (
    build,
    get,
    matrix,
    need,
    positive_int,
    read_json,
    read_npz,
    read_pt,
    read_safetensors,
    shapes,
)
from saekit.formats.gemma_scope_2 import read_gemma_scope_2

__all__ = ["FORMATS", "READERS", "FormatError", "read_dictionary_learning", "read_gemma_scope", "read_openai", "read_saelens",
           "read_sparsify"]


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
#: SAELens' transcoder architectures (``sae_lens/saes/transcoder.py``) -> (kind, skip term).
_SAELENS_TRANSCODERS = {"transcoder": ("relu", False), "skip_transcoder": ("relu", True),
                        "jumprelu_transcoder": ("jumprelu", False), "jumprelu_skip_transcoder": ("jumprelu", True)}


def read_saelens(path: Path, fold: bool = True) -> Dictionary:
    """SAELens directory: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``)."""
    cpath = path / "cfg.json"
    cfg = read_json(cpath)
    arch = get(cfg, "architecture", (str,), cpath, "standard", "SAELens' architecture")
    if arch not in _SAELENS_KINDS and arch not in _SAELENS_TRANSCODERS:
        raise FormatError(f"{cpath}: architecture {arch!r} is not supported; "
                          f"saekit reads {sorted(_SAELENS_KINDS) + sorted(_SAELENS_TRANSCODERS)}")
    transcoder = arch in _SAELENS_TRANSCODERS
    norm = get(cfg, "normalize_activations", (str, type(None)), cpath, "none") or "none"
    if norm not in ("none", "expected_average_only_in", "layer_norm"):
        raise FormatError(f"{cpath}: normalize_activations {norm!r} has no saekit equivalent "
                          "(saekit maps 'none', 'layer_norm' and a folded 'expected_average_only_in')")
    d_in = positive_int(cfg.get("d_in"), "d_in", cpath, what="SAELens' activation width")
    d_sae = positive_int(cfg.get("d_sae"), "d_sae", cpath, what="SAELens' number of features")
    b_dec_in = get(cfg, "apply_b_dec_to_input", (bool,), cpath, True)
    rescale = get(cfg, "rescale_acts_by_decoder_norm", (bool, type(None)), cpath, False)
    md = get(cfg, "metadata", (dict, type(None)), cpath, None) or {}
    str_or_null = (str, type(None))
    hook = get(cfg, "metadata.hook_name", str_or_null, cpath, None) if "hook_name" in md else \
        get(cfg, "hook_name", str_or_null, cpath, None, "SAELens' hook name")
    model = get(cfg, "metadata.model_name", str_or_null, cpath, None) if "model_name" in md else \
        get(cfg, "model_name", str_or_null, cpath, None)
    version = get({"metadata": md}, "metadata.sae_lens_version", str_or_null, cpath, None)
    training = get({"metadata": md}, "metadata.training_architecture", str_or_null, cpath, None)
    where = path / "sae_weights.safetensors"
    t = read_safetensors(where)
    kind, skip = _SAELENS_TRANSCODERS.get(arch, (_SAELENS_KINDS.get(arch), False))
    names = ["W_enc", "W_dec", "b_dec"] + (["b_gate", "b_mag", "r_mag"] if kind == "gated" else ["b_enc"])
    names += ["W_skip"] if skip else []
    need(t, names + (["threshold"] if kind == "jumprelu" else []), where)
    shape = matrix(t, "W_dec", where)
    d_out = positive_int(cfg.get("d_out"), "d_out", cpath, what="SAELens' transcoder output width") if transcoder else d_in
    for field, dim, value in (("d_out" if transcoder else "d_in", 1, d_out), ("d_sae", 0, d_sae)):
        if value != shape[dim]:
            raise FormatError(f"{where}: W_dec has shape {shape}, but cfg.json says {field}={value}")
    if transcoder:
        if b_dec_in:
            raise FormatError(f"{cpath}: field 'apply_b_dec_to_input' is true, but a {arch} reads raw inputs "
                              "(SAELens refuses it too)")
        shapes(t, {"W_enc": (d_in, d_sae), **({"W_skip": (d_out, d_in)} if skip else {})}, where)
    if "scaling_factor" in t:  # older SAELens fine-tuning scale on the codes: fold it into W_dec
        shapes(t, {"scaling_factor": (d_sae,)}, where)
        t["W_dec"] = t["W_dec"] * t.pop("scaling_factor").reshape(-1, 1)
    meta = {"source_format": "saelens", "sae_lens_version": version}
    if training:
        meta["training_architecture"] = training
    k = None
    options: dict[str, Any] = {"apply_b_dec_to_input": b_dec_in, **({"skip": True} if skip else {})}
    detail = get({"metadata": md}, "metadata.training_architecture_details", (dict, type(None)), cpath,
                 None) or {}
    if kind == "topk":
        k = positive_int(cfg.get("k"), "k", cpath, d_sae, "SAELens' codes kept per token")
        if training == "matryoshka_topk":
            kind = training
    elif kind == "jumprelu" and training in ("batchtopk", "matryoshka_batchtopk"):
        kind = training  # SAELens saves BatchTopK (and its Matryoshka) as a JumpReLU with a constant threshold
        k = positive_int(detail.get("k"), "metadata.training_architecture_details.k", cpath, d_sae)
    if kind.startswith("matryoshka_"):
        options["group_sizes"] = _group_sizes(detail.get("matryoshka_widths"), d_sae, cpath)
    d = build(kind, {n: t[n] for n in names + (["threshold"] if "threshold" in t else []) if n in t}, where,
              k=k, hook=hook, model=model, processing="hooked", options=options,
              input_norm="layer_norm" if norm == "layer_norm" else "none", metadata=meta, fold=fold,
              rescale=bool(rescale) and kind == "topk", transcoder=transcoder,
              hook_out=get({"metadata": md}, "metadata.hook_name_out", str_or_null, cpath, None) if transcoder else None)
    if (path / "sparsity.safetensors").is_file():
        s = read_safetensors(path / "sparsity.safetensors")
        need(s, ["sparsity"], path / "sparsity.safetensors")
        sparsity = check_tensor("sparsity", s["sparsity"], path / "sparsity.safetensors")
        if sparsity.numel() != d_sae:
            raise FormatError(f"{path / 'sparsity.safetensors'}: tensor 'sparsity' has shape "
                              f"{tuple(sparsity.shape)}, expected {d_sae} values (d_sae)")
        d.log_firing_freq = sparsity.float().reshape(-1)
    return d


def _group_sizes(widths: Any, d_sae: int, cpath: Path) -> list[int]:
    """Matryoshka group sizes from SAELens' prefix widths (``matryoshka_widths``)."""
    field = "metadata.training_architecture_details.matryoshka_widths"
    if (not isinstance(widths, list) or not widths or not all(type(w) is int for w in widths)
            or any(b <= a for a, b in zip([0, *widths[:-1]], widths, strict=True)) or widths[-1] != d_sae):
        raise FormatError(f"{cpath}: {field} must be a strictly increasing list of ints ending at d_sae={d_sae}, "
                          f"got {widths!r}")
    return [b - a for a, b in zip([0, *widths[:-1]], widths, strict=True)]


def read_sparsify(path: Path, fold: bool = True) -> Dictionary:
    """EleutherAI sparsify hookpoint directory: ``cfg.json`` + ``sae.safetensors``."""
    cpath = path / "cfg.json"
    cfg = read_json(cpath)
    activation = get(cfg, "activation", (str,), cpath, "topk")
    if activation != "topk":
        raise FormatError(f"{cpath}: activation {activation!r}; saekit reads topk")
    transcode = bool(get(cfg, "transcode", (bool, type(None)), cpath, False))
    skip = bool(get(cfg, "skip_connection", (bool, type(None)), cpath, False))
    if skip and not transcode:
        raise FormatError(f"{cpath}: skip_connection=true without transcode (an SAE with a skip term from its "
                          "input to itself); saekit reads skip connections on transcoders only")
    num_latents = get(cfg, "num_latents", (int,), cpath, 0, "sparsify's number of features")
    expansion = get(cfg, "expansion_factor", (int,), cpath, None)
    cfg_d_in = get(cfg, "d_in", (int,), cpath, None)
    where = path / "sae.safetensors"
    t = read_safetensors(where)
    need(t, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"] + (["W_skip"] if skip else []), where)
    n, d_in = matrix(t, "W_dec", where)
    k = positive_int(cfg.get("k"), "k", cpath, n, "sparsify's codes kept per token")
    if cfg_d_in is not None and cfg_d_in != d_in:
        raise FormatError(f"{where}: W_dec has shape {(n, d_in)}, but cfg.json says d_in={cfg_d_in}")
    if num_latents < 0 or (num_latents and num_latents != n):
        raise FormatError(f"{where}: W_dec has shape {(n, d_in)}, but cfg.json says num_latents={num_latents}")
    if not num_latents and expansion is not None and expansion * d_in != n:
        raise FormatError(f"{where}: W_dec has shape {(n, d_in)}, but cfg.json says num_latents=0 and "
                          f"expansion_factor={expansion} (so {expansion} * d_in features)")
    shapes(t, {"encoder.weight": (n, d_in), "encoder.bias": (n,), "b_dec": (d_in,),
               **({"W_skip": (d_in, d_in)} if skip else {})}, where)
    tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if skip:  # sparsify adds x @ W_skip.mT: saekit's [d_out, d_in] orientation already
        tensors["W_skip"] = t["W_skip"]
    run = path.parent / "config.json"  # the trainer's run config, when the run directory is intact
    model = get(read_json(run), "model", (str, type(None)), run, None) if run.is_file() else None
    # sparsify keeps the top-k of the ReLU'd pre-activations; SAELens-style top-k then
    # ReLU keeps the same codes (when fewer than k are positive both pad with zeros).
    meta = {"source_format": "sparsify", "source_hook": path.name}
    # saekit's own exports record its hook names (sparsify ignores keys it does not know);
    # sparsify's files name only the hookpoint, by their folder.
    hook = get(cfg, "saekit_hook", (str,), cpath, None)
    hook_out = get(cfg, "saekit_hook_out", (str,), cpath, None)
    model = get(cfg, "saekit_model", (str,), cpath, model)
    processing = get(cfg, "saekit_processing", (str,), cpath, "raw")  # sparsify reads HF weights
    if not transcode:
        return build("topk", tensors, where, k=k, hook=hook or tl_hook_from_module(path.name), model=model,
                     processing=processing, metadata=meta, fold=fold)
    # A sparsify transcoder reads its hookpoint module's input and predicts its output
    # (same width; the encoder sees raw x). The output of `layers.L.mlp` is hook_mlp_out,
    # its input the MLP's normed input, blocks.L.ln2.hook_out.
    out = hook_out or tl_hook_from_module(path.name)
    m = re.fullmatch(r"blocks\.(\d+)\.hook_mlp_out", out or "")
    hook = hook or (f"blocks.{m.group(1)}.ln2.hook_out" if m else None)
    return build("topk", tensors, where, k=k, hook=hook, model=model, processing=processing,
                 options={"apply_b_dec_to_input": False, "skip": skip}, metadata=meta, fold=fold,
                 transcoder=True, hook_out=out)


def read_dictionary_learning(path: Path, fold: bool = True) -> Dictionary:
    """saprmarks/dictionary_learning: ``ae.pt`` (nn.Linear orientation) + ``config.json``."""
    cpath = path / "config.json"
    cfg = read_json(cpath)
    tr = get(cfg, "trainer", (dict,), cpath, None)
    if tr is None or "dict_class" not in tr:
        raise FormatError(f"{cpath}: no trainer.dict_class; not a dictionary_learning config")
    cls = get(cfg, "trainer.dict_class", (str,), cpath)
    submodule = get(cfg, "trainer.submodule_name", (str, type(None)), cpath, None)
    lm = get(cfg, "trainer.lm_name", (str, type(None)), cpath, None)
    width = get(cfg, "trainer.activation_dim", (int, type(None)), cpath, None)
    size = get(cfg, "trainer.dict_size", (int, type(None)), cpath, None)
    where = path / "ae.pt"
    t = read_pt(where)
    hook = None
    m = re.fullmatch(r"(resid_post|resid_pre|mlp_out|attn_out)_layer_(\d+)", submodule or "")
    if m:
        hook = _DL_HOOKS[m.group(1)].format(m.group(2))
    common = {"hook": hook, "model": lm, "processing": "raw", "fold": fold,
              "metadata": {"source_format": "dictionary_learning", "dict_class": cls, "source_hook": submodule}}

    def dims(name: str, transposed: bool) -> tuple[int, int]:
        a, b = matrix(t, name, where)
        n, d_in = (b, a) if transposed else (a, b)
        for field, want, got in (("trainer.activation_dim", width, d_in), ("trainer.dict_size", size, n)):
            if want is not None and want != got:
                raise FormatError(f"{where}: tensor {name!r} has shape {(a, b)}, but config.json says {field}={want}")
        return n, d_in

    if cls == "AutoEncoder":
        need(t, ["bias", "encoder.weight", "encoder.bias", "decoder.weight"], where)
        n, d_in = dims("decoder.weight", True)
        shapes(t, {"encoder.weight": (n, d_in), "encoder.bias": (n,), "bias": (d_in,)}, where)
        return build("relu", {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"],
                              "W_dec": t["decoder.weight"].T, "b_dec": t["bias"]}, where, **common)
    if cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        need(t, ["b_dec", "encoder.weight", "encoder.bias", "decoder.weight", "threshold"], where)
        n, d_in = dims("decoder.weight", True)
        shapes(t, {"encoder.weight": (n, d_in), "encoder.bias": (n,), "b_dec": (d_in,)}, where)
        threshold = check_tensor("threshold", t["threshold"], where)
        if threshold.numel() != 1:
            raise FormatError(f"{where}: tensor 'threshold' has shape {tuple(threshold.shape)}, expected a scalar")
        k_file, k_cfg = t.get("k"), tr.get("k")
        k = positive_int(k_file if k_file is not None else k_cfg, "k", where, n, "trainer.k / the ae.pt's k")
        if k_file is not None and k_cfg is not None and positive_int(k_cfg, "trainer.k", cpath, n) != k:
            raise FormatError(f"{where}: k={k}, but config.json says trainer.k={k_cfg!r}")
        tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"], "W_dec": t["decoder.weight"].T,
                   "b_dec": t["b_dec"]}
        if cls == "AutoEncoderTopK":  # its default encode is a per-token top-k (the threshold is opt-in)
            return build("topk", tensors, where, k=k, **common)
        # BatchTopKSAE encodes with its scalar threshold on the ReLU'd pre-activations;
        # a negative one cuts nothing, exactly as a zero one does here.
        tensors["threshold"] = threshold.float().clamp_min(0).reshape(()).expand(n).clone()
        return build("batchtopk", tensors, where, k=k, **common)
    if cls == "JumpReluAutoEncoder":
        need(t, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], where)
        n, d_in = dims("W_dec", False)
        shapes(t, {"W_enc": (d_in, n), "b_enc": (n,), "b_dec": (d_in,), "threshold": (n,)}, where)
        # relu(pre·[pre > θ]) equals saekit's relu(pre)·[pre > θ]; b_dec is not subtracted.
        return build("jumprelu", {n: t[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}, where,
                     options={"apply_b_dec_to_input": False}, **common)
    raise FormatError(f"{cpath}: dict_class {cls!r} is not supported; saekit reads "
                      "AutoEncoder, AutoEncoderTopK, BatchTopKSAE and JumpReluAutoEncoder")


def read_gemma_scope(path: Path, fold: bool = True) -> Dictionary:
    """Gemma Scope ``params.npz``: a JumpReLU whose encoder sees raw x (no b_dec subtracted).
    The hook comes from the folder names (``layer_N`` under a ``-res``/``-mlp``/``-att``
    repository) when they say it; the registry states it otherwise. Under a
    ``-transcoders`` repository it is a transcoder from ``blocks.N.ln2.hook_out`` (the MLP's
    normed input; SAELens calls it ``ln2.hook_normalized``) to ``blocks.N.hook_mlp_out``."""
    t = read_npz(path)
    need(t, ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"], path)
    parts = [p.lower() for p in path.resolve().parts]
    layer = next((m.group(1) for p in reversed(parts) if (m := re.fullmatch(r"layer_(\d+)", p))), None)
    hooks = {"-res": "blocks.{}.hook_resid_post", "-mlp": "blocks.{}.hook_mlp_out", "-att": "blocks.{}.attn.hook_z",
             "-transcoders": "blocks.{}.ln2.hook_out"}
    site = next((s for p in parts for s in hooks if s in p), None)
    hook = hooks[site].format(layer) if layer is not None and site else None
    # A -transcoders repository: the MLP's normed input -> its output (SAELens'
    # gemma_2_transcoder loader); the file alone cannot tell a transcoder from an SAE.
    transcoder = site == "-transcoders"
    hook_out = f"blocks.{layer}.hook_mlp_out" if transcoder and layer is not None else None
    return build("jumprelu", {n: t[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}, path,
                 hook=hook, processing="raw", options={"apply_b_dec_to_input": False}, fold=fold,
                 metadata={"source_format": "gemma_scope"}, transcoder=transcoder, hook_out=hook_out)


def read_openai(path: Path, fold: bool = True) -> Dictionary:
    """openai/sparse_autoencoder state dict (``.pt``): TopK with a per-token LayerNorm of
    the input, undone after decoding (``input_norm="layer_norm"``)."""
    t = read_pt(path)
    need(t, ["pre_bias", "latent_bias", "encoder.weight", "decoder.weight"], path)
    act = t.get("activation", "TopK")
    if not isinstance(act, str) or act != "TopK":
        raise FormatError(f"{path}: activation {act!r}; saekit reads OpenAI's TopK autoencoders")
    state = t.get("activation_state_dict", {})
    if not isinstance(state, dict):
        raise FormatError(f"{path}: field 'activation_state_dict' must be a dict, got {type(state).__name__}")
    d_in, n = matrix(t, "decoder.weight", path)
    shapes(t, {"encoder.weight": (n, d_in), "latent_bias": (n,), "pre_bias": (d_in,)}, path)
    k = positive_int(state.get("k"), "activation_state_dict.k", path, n, "OpenAI's codes kept per token")
    return build("topk", {"W_enc": t["encoder.weight"].T, "b_enc": t["latent_bias"],
                          "W_dec": t["decoder.weight"].T, "b_dec": t["pre_bias"]}, path,
                 k=k, processing="raw", input_norm="layer_norm", fold=fold, metadata={"source_format": "openai"})


#: Reader of each foreign format, by name.
READERS = {
    "saelens": read_saelens,
    "sparsify": read_sparsify,
    "dictionary_learning": read_dictionary_learning,
    "gemma_scope": read_gemma_scope,
    "openai": read_openai,
    "gemma_scope_2": read_gemma_scope_2,
}

#: Every format :func:`saekit.formats.load` reads: saekit's own and the foreign ones.
FORMATS = ("saekit", *READERS)
