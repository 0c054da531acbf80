"""The one interface every dictionary implements, its config, and its format on disk.

A dictionary writes activations ``A [n, d_in] ≈ codes [n, d_dict] @ W_dec [d_dict, d_in]
+ b_dec`` with non-negative codes and unit-norm ``W_dec`` rows. On disk it is a
directory in SAELens' layout, so SAELens loads saekit SAEs unchanged:

- ``cfg.json``: SAELens' fields (``architecture``, ``d_in``, ``d_sae``, ...,
  ``metadata``) plus saekit's own under ``cfg["saekit"]`` (schema version, kind,
  hook, model, processing, input_norm, options, training metadata);
- ``sae_weights.safetensors``: only SAELens' tensor names;
- ``sparsity.safetensors``: log10 firing frequency per feature, when known;
- ``saekit_extra.safetensors``: tensors SAELens would reject (SNMF state, ...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

SCHEMA_VERSION = 1
#: The SAELens release whose directory layout saekit writes (checked with sae-lens 6.54.12).
SAELENS_FORMAT_VERSION = "6.0.0"
INPUT_NORMS = ("none", "scalar", "layer_norm")
WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"
EXTRA = "saekit_extra.safetensors"

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
        processing (``hooked``/``raw``/``native``). Splicing needs ``hook``.
    input_norm
        ``none``; ``scalar`` (trained with E‖x − x̄‖² = d_in, folded into the weights, so
        the saved dictionary takes raw activations); ``layer_norm`` (per token).
    options
        Kind-specific hyperparameters (see each kind's ``OPTIONS``); unknown keys are
        refused.
    metadata
        Training metadata and provenance (versions, git SHA, data, steps).
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

    def __post_init__(self) -> None:
        if self.kind not in REGISTRY:
            raise ValueError(f"unknown dictionary kind {self.kind!r}; available: {sorted(REGISTRY)}")
        for name in ("d_in", "d_dict"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.k is not None and (not isinstance(self.k, int) or not 1 <= self.k <= self.d_dict):
            raise ValueError(f"k must be an integer in 1..d_dict={self.d_dict}, got {self.k!r}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}")
        cls = REGISTRY[self.kind]
        if cls.NEEDS_K and self.k is None:
            raise ValueError(f"kind {self.kind!r} needs k (codes kept per token)")
        unknown = set(self.options) - set(cls.OPTIONS)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for kind {self.kind!r}; "
                             f"allowed: {sorted(cls.OPTIONS)}")
        self.options = {**cls.OPTIONS, **self.options}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> DictionaryConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(names)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"{where}: {e}") from e


class Dictionary(nn.Module):
    """Base class: ``encode``, ``decode``, ``forward``, ``active``, ``save``/``load``.

    Subclasses set ``W_dec [d_dict, d_in]`` and ``b_dec [d_in]``, implement ``encode``,
    and list their SAELens-visible tensors in ``saelens_tensors``.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {}
    NEEDS_K: ClassVar[bool] = False
    SAELENS_ARCHITECTURE: ClassVar[str | None] = None

    W_dec: Tensor
    b_dec: Tensor

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
        }

    def save(self, path: str | Path) -> Path:
        """Write the dictionary directory atomically (temporary sibling, then rename)."""
        cfg = {**self.saelens_config(), "saekit": {"schema_version": SCHEMA_VERSION, **self.cfg.to_dict()}}
        return self.write_directory(path, cfg, self.saelens_tensors(), self.extra_tensors())

    def write_directory(self, path: str | Path, cfg: dict[str, Any], tensors: dict[str, Tensor],
                        extra: dict[str, Tensor] | None = None, weights: str = WEIGHTS) -> Path:
        """Atomically write ``cfg.json``, ``weights`` (``tensors``), ``EXTRA`` (``extra``) and,
        when known, ``sparsity.safetensors``: the one writer behind every format saved."""
        from safetensors.torch import save_file

        from saekit.fileio import atomic_directory

        cpu = lambda d: {k: v.detach().to("cpu").contiguous() for k, v in d.items()}  # noqa: E731
        with atomic_directory(path) as tmp:
            (tmp / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
            save_file(cpu(tensors), str(tmp / weights))
            if extra:
                save_file(cpu(extra), str(tmp / EXTRA))
            if self.log_firing_freq is not None:
                save_file({"sparsity": self.log_firing_freq.detach().float().cpu().contiguous()}, str(tmp / SPARSITY))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: Any = None) -> Dictionary:
        """Load a saekit dictionary directory (any kind, whatever ``cls`` it is called on)."""
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path = path / "cfg.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{path}: no cfg.json; not a dictionary directory")
        try:
            raw = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
        if "saekit" not in raw:
            raise ValueError(f"{cfg_path}: no 'saekit' section; load foreign checkpoints with "
                             "saekit.load_dictionary")
        section = dict(raw["saekit"])
        version = section.pop("schema_version", None)
        if version != SCHEMA_VERSION:
            raise ValueError(f"{cfg_path}: saekit schema_version {version!r}, this saekit reads {SCHEMA_VERSION}")
        cfg = DictionaryConfig.from_dict(section, where=str(cfg_path))
        d = REGISTRY[cfg.kind](cfg)
        try:
            tensors = load_file(path / WEIGHTS)
            if (path / EXTRA).is_file():
                tensors.update(load_file(path / EXTRA))
        except Exception as e:
            raise ValueError(f"{path}: cannot read weights ({e})") from e
        d.load_tensors(tensors, where=str(path / WEIGHTS))
        if (path / SPARSITY).is_file():
            d.log_firing_freq = load_file(path / SPARSITY)["sparsity"]
        return d.to(device) if device is not None else d

    def load_tensors(self, tensors: dict[str, Tensor], where: str) -> None:
        """Copy named tensors into this dictionary, checking names and shapes."""
        own = {**self.saelens_tensors(), **self.extra_tensors()}
        missing = sorted(set(own) - set(tensors))
        if missing:
            raise ValueError(f"{where}: missing tensor(s) {missing}")
        for name, target in own.items():
            src = tensors[name]
            if src.shape != target.shape:
                raise ValueError(f"{where}: tensor {name!r} has shape {tuple(src.shape)}, "
                                 f"expected {tuple(target.shape)} from cfg.json")
            with torch.no_grad():
                target.copy_(src)

    def __repr__(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.k is not None else ""
        return f"{type(self).__name__}(kind={c.kind!r}, d_in={c.d_in}, d_dict={c.d_dict}{k}, hook={c.hook!r})"
