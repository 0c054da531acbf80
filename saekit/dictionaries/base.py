"""The one interface every dictionary implements, its config, and its format on disk.

A dictionary writes activations ``A [n, d_in] ≈ codes [n, d_dict] @ W_dec [d_dict, d_in]
+ b_dec`` with non-negative codes and unit-norm ``W_dec`` rows. On disk it is a
directory in SAELens' layout, so SAELens loads saekit SAEs unchanged. A transcoder
(``cfg.d_out`` set) predicts another hook's activation instead: ``Y [n, d_out] ≈ codes
@ W_dec [d_dict, d_out] + b_dec`` (plus ``X W_skipᵀ`` for a skip transcoder), its
``W_dec`` rows unit directions in the output space. The files:

- ``cfg.json``: SAELens' fields (``architecture``, ``d_in``, ``d_sae``, ...,
  ``metadata``) plus saekit's own under ``cfg["saekit"]`` (schema version, kind,
  hook, model, processing, input_norm, options, training metadata);
- ``sae_weights.safetensors``: only SAELens' tensor names;
- ``sparsity.safetensors``: log10 firing frequency per feature, when known;
- ``saekit_extra.safetensors``: tensors SAELens would reject (SNMF state, ...).

Integrity: ``cfg["saekit"]["sha256"]`` records each tensor file's sha256 and
:meth:`Dictionary.load` checks it (files written before it existed still load); every
tensor any reader loads is checked for name, dtype, shape and finiteness in
:meth:`Dictionary.load_tensors`; a bad file raises :class:`FormatError` naming the file
and the field or tensor (the checks are in :mod:`saekit.dictionaries.integrity`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from saekit.dictionaries.integrity import (
    FormatError,
    check_hashes,
    check_saelens_fields,
    check_tensor,
    read_json_object,
    read_safetensors_file,
)
from saekit.dictionaries.options import KindOptions, check_options, option_defaults, options_class
from saekit.fileio import atomic_directory, file_sha256
from saekit.schema import type_hints, type_ok

SCHEMA_VERSION = 1
#: The SAELens release whose directory layout saekit writes (checked with sae-lens 6.54.12).
SAELENS_FORMAT_VERSION = "6.0.0"
INPUT_NORMS = ("none", "scalar", "layer_norm")
WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"
EXTRA = "saekit_extra.safetensors"

#: The tensor files of a dictionary directory whose sha256 ``cfg["saekit"]["sha256"]`` records.
TENSOR_FILES = (WEIGHTS, EXTRA, SPARSITY)



#: kind -> Dictionary subclass, filled by ``register``.
REGISTRY: dict[str, type[Dictionary]] = {}


def register(kind: str):
    def deco(cls: type[Dictionary]) -> type[Dictionary]:
        REGISTRY[kind] = cls
        return cls
    return deco


@dataclass
class DictionaryConfig:
    """What a dictionary is and where its activations came from.

    Parameters
    ----------
    kind
        ``relu``, ``topk``, ``batchtopk``, ``jumprelu`` (and later kinds).
    d_in, d_dict
        Activation width and number of features.
    k
        Codes kept per token (top-k kinds; optional elsewhere).
    hook, model, processing
        The activations' provenance: hook name, model name, and the model's weight
        processing (``hooked``/``raw``/``native``). Splicing needs ``hook``. For a
        transcoder ``hook`` is the *input* hook (what ``encode`` reads).
    input_norm
        ``none``; ``scalar`` (trained with E‖x − x̄‖² = d_in, folded into the weights, so
        the saved dictionary takes raw activations); ``layer_norm`` (per token).
    options
        Kind-specific hyperparameters, a plain dict checked against the kind's
        ``Options`` dataclass (:mod:`saekit.dictionaries.options`): unknown keys and
        values of the wrong type are refused.
    metadata
        Training metadata and provenance (versions, git SHA, data, steps).
    hook_out, d_out
        Transcoders only: the hook whose activation the dictionary predicts and its
        width. ``d_out=None`` is an ordinary dictionary (it reconstructs its input);
        any ``d_out`` (even ``d_out == d_in``) makes a transcoder: ``W_dec [d_dict,
        d_out]``, ``b_dec [d_out]``, an encoder that reads the raw input
        (:mod:`saekit.dictionaries.sae`). ``hook_out=None``: an SAE's output is its own
        hook; a transcoder's is unknown (it cannot be spliced until set). Files written before these fields existed load as dictionaries
        without them.
    """

    kind: str
    d_in: int
    d_dict: int
    k: int | None = None
    hook: str | None = None
    model: str | None = None
    processing: str | None = None
    input_norm: str = "none"
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    hook_out: str | None = None
    d_out: int | None = None

    #: Fields a saekit file may lack (added after files were first written), with the
    #: value an absent one means.
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {"hook_out": None, "d_out": None}

    @property
    def is_transcoder(self) -> bool:
        """True when the dictionary predicts another activation than its input (``d_out`` set)."""
        return self.d_out is not None

    @property
    def target_width(self) -> int:
        """Width of what ``decode`` produces: ``d_out`` for a transcoder, else ``d_in``."""
        return self.d_out if self.d_out is not None else self.d_in

    @property
    def output_hook(self) -> str | None:
        """The hook whose activation ``decode`` predicts and where ``W_dec``'s rows live
        (``hook_out``, else ``hook``). A transcoder without ``hook_out`` (fitted without
        one, or read from SAELens, whose files do not record it) cannot be spliced:
        :func:`saekit.models.check_dictionary_fits` says so."""
        return self.hook_out if self.hook_out is not None else self.hook

    def __post_init__(self) -> None:
        if self.kind not in REGISTRY:
            raise ValueError(f"unknown dictionary kind {self.kind!r}; available: {sorted(REGISTRY)}")
        for name in ("d_in", "d_dict"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.k is not None and (not _is_int(self.k) or not 1 <= self.k <= self.d_dict):
            raise ValueError(f"k must be an integer in 1..d_dict={self.d_dict}, got {self.k!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        cls = REGISTRY[self.kind]
        if self.d_out is not None and (not _is_int(self.d_out) or self.d_out <= 0):
            raise ValueError(f"d_out must be a positive integer or None, got {self.d_out!r}")
        if self.hook_out is not None and self.d_out is None:
            raise ValueError(f"hook_out={self.hook_out!r} makes a transcoder, which needs d_out "
                             "(the output hook's width)")
        if self.is_transcoder:
            if not cls.TRANSCODES:
                raise ValueError(f"kind {self.kind!r} cannot be a transcoder (d_out/hook_out/target); "
                                 f"kinds that can: {sorted(k for k, c in REGISTRY.items() if c.TRANSCODES)}")
            if self.input_norm == "layer_norm":
                # LayerNorm's per-token statistics are the input's; restoring them on another
                # hook's prediction would be meaningless.
                raise ValueError("a transcoder cannot use input_norm 'layer_norm' (the input's per-token "
                                 "statistics do not belong to the output); use 'scalar' or 'none'")
        if cls.NEEDS_K and self.k is None:
            raise ValueError(f"kind {self.kind!r} needs k (codes kept per token)")
        check_options(self.kind, cls.Options, self.options)
        self.options = {**cls.OPTIONS, **self.options}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config", prefix: str = "",
                  required: bool = False) -> DictionaryConfig:
        """Build a config from a file's dict, checking every field's type first so that a
        bad value is reported as ``{where}: field '{prefix}{name}' ...`` (a
        :class:`FormatError`), never as a TypeError. ``required``: every field must be
        present (saekit writes them all)."""
        if not isinstance(d, dict):
            raise FormatError(f"{where}: {prefix.rstrip('.') or 'config'} must be an object, got {d!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise FormatError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(fields)}")
        for name, f in fields.items():
            if name not in d:
                if name in cls.ADDED_FIELDS:
                    continue
                if required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                    raise FormatError(f"{where}: field '{prefix}{name}' missing")
                continue
            v, bad = d[name], None
            if name in ("d_in", "d_dict", "k", "d_out"):
                nullable = name in ("k", "d_out")
                if not (v is None and nullable) and (not _is_int(v) or v <= 0):
                    bad = "a positive integer" + (" or null" if nullable else "")
            elif name in ("kind", "input_norm"):
                if not isinstance(v, str):
                    bad = "a string"
            elif name in ("hook", "model", "processing", "hook_out"):
                if v is not None and not isinstance(v, str):
                    bad = "a string or null"
            elif not isinstance(v, dict):
                bad = "an object"
            if bad:
                raise FormatError(f"{where}: field '{prefix}{name}' must be {bad}, got {v!r}")
        kind = d["kind"]
        if kind not in REGISTRY:
            raise FormatError(f"{where}: field '{prefix}kind' is {kind!r}, not a dictionary kind; "
                              f"available: {sorted(REGISTRY)}")
        defaults = REGISTRY[kind].OPTIONS
        hints = type_hints(REGISTRY[kind].Options)
        for key, v in d.get("options", {}).items():
            typed = hints.get(key, Any) is not Any  # the options dataclass says; else like the default
            if key in defaults and not (type_ok(v, hints[key]) if typed else _same_type(v, defaults[key])):
                raise FormatError(f"{where}: field '{prefix}options.{key}' must be like its default "
                                  f"{defaults[key]!r}, got {v!r}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise FormatError(f"{where}: {prefix}{e}") from e


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _same_type(v: Any, default: Any) -> bool:
    """An option value of a file against the option's default: a bool for a bool, a
    string for a string, and for a number (or a ``None`` default) a finite number or
    null (what a caller of ``fit`` may have passed). Lists, objects, NaN and a string
    where a number belongs are refused."""
    if isinstance(default, bool):
        return isinstance(v, bool)
    if isinstance(default, str):
        return isinstance(v, str)
    if isinstance(default, (int, float)) or default is None:
        return v is None or ((_is_int(v) or isinstance(v, float)) and math.isfinite(v))
    return isinstance(v, type(default))


class Dictionary(nn.Module):
    """Base class: ``encode``, ``decode``, ``forward``, ``active``, ``save``/``load``.

    Subclasses set ``W_dec [d_dict, d_in]`` and ``b_dec [d_in]``, implement ``encode``,
    and list their SAELens-visible tensors in ``saelens_tensors``.
    """

    #: The kind's options: a dataclass (a :class:`KindOptions`) declared beside the class.
    Options: ClassVar[type] = KindOptions
    #: ``{option: default}``, derived from ``Options`` (kept for code that reads the dict).
    OPTIONS: ClassVar[dict[str, Any]] = {}
    NEEDS_K: ClassVar[bool] = False
    SAELENS_ARCHITECTURE: ClassVar[str | None] = None
    #: The kind can be a transcoder (``cfg.d_out`` set): the SAE kinds.
    TRANSCODES: ClassVar[bool] = False

    W_dec: Tensor
    b_dec: Tensor

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "Options" in cls.__dict__:
            cls.OPTIONS = option_defaults(cls.Options)
        elif "OPTIONS" in cls.__dict__:  # a kind declared the earlier way: a dict of defaults
            cls.Options = options_class(f"{cls.__name__}Options", cls.OPTIONS)

    def __init__(self, cfg: DictionaryConfig):
        super().__init__()
        self.cfg = cfg
        #: log10 firing frequency per feature, saved as sparsity.safetensors when set.
        self.log_firing_freq: Tensor | None = None

    # -- the interface -------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def active(self, codes: Tensor) -> Tensor:
        """Where a feature fires: code > 0 after the dictionary's own sparsification."""
        return codes > 0

    def reconstruct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes, prediction)`` of inputs ``x``: what metrics compare with the activation at
        ``cfg.output_hook`` (``x`` itself for an SAE, the output hook's for a transcoder).
        Kinds whose prediction needs more than the codes (a skip transcoder) override it."""
        codes = self.encode(x)
        return codes, self.decode(codes)

    def check_input(self, x: Tensor, name: str = "x") -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"{name} has width {x.shape[-1]}, but this {self.cfg.kind} dictionary "
                             f"expects d_in={self.cfg.d_in}" + (f" (hook {self.cfg.hook})" if self.cfg.hook else ""))

    # -- format on disk --------------------------------------------------------------

    def saelens_tensors(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def extra_tensors(self) -> dict[str, Tensor]:
        return {}

    def saelens_config(self) -> dict[str, Any]:
        """SAELens' own cfg.json fields (architecture-specific ones added by subclasses)."""
        c = self.cfg
        return {
            "architecture": self.SAELENS_ARCHITECTURE,
            "d_in": c.d_in,
            "d_sae": c.d_dict,
            "dtype": str(self.W_dec.dtype).removeprefix("torch."),
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "hook_z" if c.hook and c.hook.endswith("attn.hook_z") else "none",
            # SAELens reads `metadata` only when sae_lens_version says the file is in its
            # 6.x layout (else it rebuilds it and drops hook_name and model_name).
            "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "model_name": c.model, "hook_name": c.hook,
                         "hook_head_index": None, "prepend_bos": True, "sae_lens_training_version": None},
        } | ({"d_out": c.d_out} if c.is_transcoder else {})

    def save(self, path: str | Path) -> Path:
        """Write the dictionary directory atomically (temporary sibling, then rename)."""
        cfg = {**self.saelens_config(), "saekit": {"schema_version": SCHEMA_VERSION, **self.cfg.to_dict()}}
        return self.write_directory(path, cfg, self.saelens_tensors(), self.extra_tensors())

    def write_directory(self, path: str | Path, cfg: dict[str, Any], tensors: dict[str, Tensor],
                        extra: dict[str, Tensor] | None = None, weights: str = WEIGHTS) -> Path:
        """Atomically write ``cfg.json``, ``weights`` (``tensors``), ``EXTRA`` (``extra``) and,
        when known, ``sparsity.safetensors``: the one writer behind every format saved.
        When ``cfg`` has a ``saekit`` section (saekit's own format), the sha256 of every
        tensor file written is recorded there, under ``sha256``."""
        cpu = lambda d: {k: v.detach().to("cpu").contiguous() for k, v in d.items()}  # noqa: E731
        files = {weights: cpu(tensors)}
        if extra:
            files[EXTRA] = cpu(extra)
        if self.log_firing_freq is not None:
            files[SPARSITY] = {"sparsity": self.log_firing_freq.detach().float().cpu().contiguous()}
        with atomic_directory(path) as tmp:
            hashes = {}
            for name, content in files.items():
                save_file(content, str(tmp / name))
                hashes[name] = file_sha256(tmp / name)
            if isinstance(cfg.get("saekit"), dict):
                cfg = {**cfg, "saekit": {**cfg["saekit"], "sha256": hashes}}
            (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: Any = None) -> Dictionary:
        """Load a saekit dictionary directory (any kind, whatever ``cls`` it is called on).

        Checks, each failing with a :class:`FormatError` that names the file and field or
        tensor: the sha256 of every tensor file recorded in ``cfg["saekit"]["sha256"]``
        (absent in files written before saekit recorded it), the saekit section's fields
        and types, SAELens' top-level fields against it, and every tensor's name, dtype,
        shape and finiteness."""
        path = Path(path)
        cfg_path = path / "cfg.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{path}: no cfg.json; not a dictionary directory")
        raw = read_json_object(cfg_path)
        if "saekit" not in raw:
            raise FormatError(f"{cfg_path}: no 'saekit' section; load foreign checkpoints with "
                              "saekit.load_dictionary")
        if not isinstance(raw["saekit"], dict):
            raise FormatError(f"{cfg_path}: field 'saekit' must be an object, got {raw['saekit']!r}")
        section = dict(raw["saekit"])
        version = section.pop("schema_version", None)
        if version != SCHEMA_VERSION or not _is_int(version):
            raise FormatError(f"{cfg_path}: saekit schema_version {version!r}, this saekit reads {SCHEMA_VERSION}")
        hashes = section.pop("sha256", None)
        cfg = DictionaryConfig.from_dict(section, where=str(cfg_path), prefix="saekit.", required=True)
        try:
            d = REGISTRY[cfg.kind](cfg)
        except (TypeError, ValueError) as e:
            raise FormatError(f"{cfg_path}: {e}") from e
        present = [name for name in TENSOR_FILES if (path / name).is_file()]
        if hashes is not None:
            check_hashes(path, hashes, present, TENSOR_FILES, cfg_path)
        tensors = read_safetensors_file(path / WEIGHTS)
        if (path / EXTRA).is_file():
            tensors.update(read_safetensors_file(path / EXTRA))
        want = raw.get("dtype")
        if isinstance(want, str) and isinstance(tensors.get("W_dec"), Tensor) \
                and str(tensors["W_dec"].dtype).removeprefix("torch.") != want:
            raise FormatError(f"{path / WEIGHTS}: tensor 'W_dec' has dtype {tensors['W_dec'].dtype}, "
                              f"but cfg.json says dtype {want!r}")
        d.load_tensors(tensors, where=str(path / WEIGHTS))
        check_saelens_fields(raw, d, cfg_path)  # after the tensors: their shapes say more
        if (path / SPARSITY).is_file():
            s = read_safetensors_file(path / SPARSITY)
            d.log_firing_freq = check_tensor("sparsity", s.get("sparsity"), path / SPARSITY, (cfg.d_dict,))
        return d.to(device) if device is not None else d

    def load_tensors(self, tensors: dict[str, Tensor], where: str) -> None:
        """Copy named tensors into this dictionary: the one place every reader's tensors
        pass, checking names, dtype (floating point), shapes and finiteness."""
        own = {**self.saelens_tensors(), **self.extra_tensors()}
        missing = sorted(n for n in own if not isinstance(tensors.get(n), Tensor))
        if missing:
            raise FormatError(f"{where}: missing tensor(s) {missing}")
        for name, target in own.items():
            src = check_tensor(name, tensors[name], where, tuple(target.shape))
            with torch.no_grad():
                target.copy_(src)

    def __repr__(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.k is not None else ""
        out = f", d_out={c.d_out}, hook_out={c.hook_out!r}" if c.is_transcoder else ""
        return f"{type(self).__name__}(kind={c.kind!r}, d_in={c.d_in}, d_dict={c.d_dict}{k}, hook={c.hook!r}{out})"


