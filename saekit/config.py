"""Run configs: one dataclass per job, loaded from TOML, overridable with ``--set``.

Every job (train, harvest, compare, each evaluator, toy, demo) has one config dataclass,
and the same object drives its Python entry (``saekit.train``, ``saekit.run_harvest``,
...) and its command, whose flags :func:`saekit.schema.add_config_arguments` generates
from the fields. This module loads and checks them, in one place for every job:
:func:`load_config` reads a TOML file (or takes a config object) and applies ``key=value``
overrides; :func:`build_config` refuses unknown keys with the list of allowed ones, reports
missing required keys, and checks every value against its field's declared type (a
``Literal`` lists its choices), the class's ``RANGES`` and ``POSITIVE`` fields, and then
the config's own ``validate(where)`` (for :class:`TrainConfig`: the kind and its options,
against the kind's options dataclass); hook names against saekit's grammar. Then, by
field name, against this machine, cheaply (:func:`check_machine`): ``device`` (a device
torch knows, and CUDA only where there is one), ``model``, ``data``, ``cache``,
``dictionary``/``dictionaries`` where they name a local path that does not exist, and
each hook's layer against a local model's config.json. A typo or a wrong value fails
before any work is done (before a model loads or an output directory is claimed) with a
``ValueError`` that names the file (or the ``--set`` item) and the key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from saekit.data import BUILTIN_CORPORA
from saekit.dictionaries import REGISTRY
from saekit.dictionaries.options import check_options
from saekit.hub import looks_like_path
from saekit.models import HOOK_RE, HOOK_TEMPLATES
from saekit.schema import hint_name, parse_override, type_hints, type_ok

#: The checkout: a model spec relative to it loads from anywhere (saekit.models.load_model).
REPO = Path(__file__).resolve().parent.parent
#: Ranges every job's config shares, for the classes whose ``RANGES`` do not name the field
#: and whose default lies in the range (the synthetic evaluator's n_tokens = 0 means unused).
COMMON_RANGES: dict[str, tuple[float, float | None]] = {
    "n_tokens": (1, None), "ctx_len": (1, None), "batch_size": (1, None), "seeds": (1, None), "seed": (0, None)}


@dataclass
class TrainConfig:
    """One SAE training run (``saekit train CONFIG.toml``); every field can be ``--set``."""

    model: str = "checkpoints/demo-lm"
    """Model spec for ``saekit.load_model``."""
    hook: str | list[str] = "blocks.2.mlp.hook_post"
    """Hook to train on, or a list: one dictionary per hook, all from one harvest."""
    hook_out: str | list[str] | None = None
    """Train transcoders: the hook whose activation each dictionary predicts from
    ``hook``'s (e.g. ``blocks.1.hook_resid_mid`` -> ``blocks.1.hook_mlp_out``), harvested in
    the same pass (or read from a ``cache`` holding both); a list pairs with a list of
    ``hook`` entry by entry. Unset: SAEs."""
    data: str = "demo"
    """Text source for ``saekit.load_tokens``."""
    cache: str | None = None
    """Train from this activation cache (``saekit harvest``) instead of harvesting."""
    stream: bool = False
    """Harvest live while training (model → shuffle buffer, the LM running ahead in a
    thread) instead of holding all activations in memory. Several hooks and sweep
    variants train in lockstep from one harvest (they must share ``batch_size``)."""
    buffer_mb: int = 1024
    """Memory budget of the shuffle buffer when streaming."""
    n_tokens: int = 1_000_000
    """Training tokens (activations)."""
    ctx_len: int = 128
    """Tokens per window."""
    kind: str = "topk"
    """Dictionary kind (``saekit.dictionaries.REGISTRY``): relu, topk, batchtopk, jumprelu,
    matryoshka_batchtopk, matryoshka_topk, snmf, nmf."""
    d_dict: int = 4096
    """Features."""
    k: int | None = 32
    """Codes kept per token (top-k kinds)."""
    batch_size: int = 4096
    """Activations per step."""
    lr: float | None = None
    """Default: 2e-4 / sqrt(d_dict / 2^14), raised for short runs (``saekit.training.schedule.default_lr``)."""
    seed: int = 0
    """Seed of the text sample, the initialisation and the batch order."""
    warmup_steps: int | None = None
    """Steps of linear learning-rate warm-up (default 5% of the steps, at most 1000)."""
    decay_start: float = 0.8
    """Fraction of the steps after which the learning rate decays linearly to 0."""
    input_norm: Literal["scalar", "none"] = "scalar"
    """Scalar normalisation of the inputs while training (folded into the saved weights), or none."""
    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """Initial decoder bias."""
    dead_tokens: int | None = None
    """Tokens without firing after which a feature counts as dead for AuxK (default:
    ``saekit.training.schedule.default_dead_tokens``)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many tokens (0: only the final weights)."""
    log_every: int = 50
    """Steps between lines of metrics.jsonl."""
    eval_every: int = 0
    """Tokens between evaluations (CE/KL recovered, SAEBench core metrics); one always
    runs at the end when the model is at hand (0: only at the end)."""
    eval_tokens: int = 16_384
    """Text tokens the evaluation splices over ("demo" evaluates on the held-out split);
    0 turns evaluation off."""
    device: str = "auto"
    """"auto" (cuda when present), "cpu", "cuda", "cuda:1", ..."""
    autocast: bool = False
    """bf16 autocast for the SAE forward and backward (parameters stay fp32)."""
    compile: bool = False
    """``torch.compile`` the SAE's forward and loss."""
    wandb_project: str | None = None
    """Also log to this wandb project (metrics.jsonl is always written)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Kind-specific hyperparameters (e.g. ``aux_coefficient``, ``l1_coefficient``), checked
    against the kind's options dataclass (``REGISTRY[kind].Options``)."""
    sweep: list[dict[str, Any]] = field(default_factory=list)
    """Variants trained on the same activations, each a table of fields to override
    (e.g. ``[{k = 16}, {k = 32}]``); one dictionary per hook and variant."""

    #: Fields with a range: (lowest allowed, highest allowed or None).
    RANGES: ClassVar[dict[str, tuple[float, float | None]]] = {
        **{name: (1, None) for name in ("n_tokens", "ctx_len", "d_dict", "k", "batch_size", "buffer_mb",
                                        "log_every", "dead_tokens")},
        **{name: (0, None) for name in ("checkpoint_every", "eval_every", "eval_tokens", "warmup_steps", "seed")},
        "decay_start": (0.0, 1.0),
    }
    #: Fields that must be above 0.
    POSITIVE: ClassVar[tuple[str, ...]] = ("lr",)

    def validate(self, where: str = "config") -> None:
        """Each run's kind is a trainable kind and its options are that kind's, of the right
        types; a ValueError names ``where`` and lists the valid kinds or options."""
        try:
            runs = self.runs()
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        variants = self.sweep or [{}]
        if self.stream and any(c.kind in ("snmf", "nmf") for _, c in runs):
            raise ValueError(f"{where}: kind {runs[0][1].kind!r} is fitted by exact passes over the data, which a "
                             "live stream cannot replay cheaply: set stream = false (in memory) or harvest a "
                             "cache (`saekit harvest`) and set `cache`")
        if self.hook_out is not None:
            if any(c.kind in ("snmf", "nmf") for _, c in runs):
                raise ValueError(f"{where}: key 'hook_out' makes transcoders, which kinds snmf/nmf cannot be; "
                                 "use an SAE kind (topk, batchtopk, relu, jumprelu, matryoshka_*)")
            for _, c in runs:
                if c.hook_out == c.hook:
                    raise ValueError(f"{where}: key 'hook_out' equals 'hook' ({c.hook!r}); leave hook_out "
                                     "unset to train an SAE")
        for i, (_, c) in enumerate(runs):  # hooks outer, variants inner
            v = variants[i % len(variants)]
            at = f"{where}: sweep entry " + ", ".join(f"{k}={x}" for k, x in v.items()) if v else where
            cls = REGISTRY.get(c.kind)
            trainable = sorted(k for k, v in REGISTRY.items() if getattr(v, "TRAINABLE", True))
            if cls is None or c.kind not in trainable:
                raise ValueError(f"{at}: key 'kind' is {c.kind!r}, not a kind saekit trains; "
                                 f"valid: {trainable}")
            check_options(c.kind, cls.Options, c.options, at)

    def runs(self) -> list[tuple[str, TrainConfig]]:
        """``(name, config)`` for every hook × variant; the name is "" for a single run."""
        hooks = self.hook if isinstance(self.hook, list) else [self.hook]
        outs = self.hook_out if isinstance(self.hook_out, list) else [self.hook_out] * len(hooks)
        if len(outs) != len(hooks):
            raise ValueError(f"hook_out lists {len(outs)} hooks but hook lists {len(hooks)}; they pair "
                             "entry by entry (or give one hook_out)")
        if isinstance(self.hook_out, list) and not isinstance(self.hook, list):
            raise ValueError("hook_out is a list but hook is one hook; give hook as a list of the same length")
        variants = self.sweep or [{}]
        out = []
        for h, ho in zip(hooks, outs, strict=True):
            for v in variants:
                if not isinstance(v, dict):
                    raise ValueError(f"sweep entry {v!r} is not a table of fields")
                bad = sorted(set(v) - {f.name for f in dataclasses.fields(self)}
                             | ({"hook", "hook_out", "sweep"} & set(v)))
                if bad:
                    raise ValueError(f"sweep entry {v}: cannot set {bad}")
                name = h + "".join(f"__{key}={val}" for key, val in v.items())
                out.append((name if len(hooks) * len(variants) > 1 else "",
                            dataclasses.replace(self, hook=h, hook_out=ho, sweep=[], **v)))
        return out


def parse_value(text: str) -> Any:
    """An override's value: TOML (``16``, ``"a"``, ``[1, 2]``, ``true``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def _check_device(value: str, where: str) -> None:
    if value == "auto":
        return
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{where}: key 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}: key 'device' is {value!r}, but torch sees no CUDA device here; use 'cpu' or "
                         "'auto'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{where}: key 'device' is {value!r}, but this machine has {torch.cuda.device_count()} "
                         "CUDA device(s), numbered from 0")


def _missing_path(key: str, value: str, where: str, what: str) -> ValueError:
    return ValueError(f"{where}: key {key!r} names {what} {value!r}, and no such file or directory exists "
                      f"(relative paths are read from {Path.cwd()})")


def check_hook_names(key: str, value: Any, where: str) -> None:
    """A ``hook``/``hook_out``/``hooks`` value names hooks of saekit's grammar (:data:`HOOK_RE`)."""
    if key not in ("hook", "hook_out", "hooks"):
        return
    for hook in value if isinstance(value, list) else [value]:
        if isinstance(hook, str) and hook and not HOOK_RE.match(hook):  # "": the dictionary's own hook
            raise ValueError(f"{where}: key {key!r} names hook {hook!r}, which saekit does not know; valid: "
                             + ", ".join(t.replace("{L}", "L") for t in HOOK_TEMPLATES) + " (L a layer)")


def _check_local(key: str, value: Any, where: str) -> None:
    if not isinstance(value, (str, list)) or value in ("", []):
        return
    if key == "device" and isinstance(value, str):
        _check_device(value, where)
    elif key == "model" and isinstance(value, str):
        path = Path(value).expanduser()
        path_like = looks_like_path(value, (REPO,)) or value.endswith(".gguf")
        if path_like and not path.exists() and not (REPO / path).exists():
            raise _missing_path(key, value, where, "a model directory")
    elif key == "data" and isinstance(value, str):
        if value.partition(":")[0] in BUILTIN_CORPORA or Path(value).expanduser().exists():
            return
        if value.startswith((".", "/", "~")) or value.endswith((".txt", ".jsonl", ".json", ".parquet")):
            raise _missing_path(key, value, where, "a text file or folder")
    elif key == "cache" and isinstance(value, str):
        if not (Path(value).expanduser() / "manifest.json").is_file():
            raise ValueError(f"{where}: key 'cache' names {value!r}, which is not an activation cache (no "
                             "manifest.json there); `saekit harvest --out DIR` makes one")
    elif key in ("dictionary", "dictionaries"):
        for spec in value if isinstance(value, list) else [value]:
            # a registry id RELEASE/ID never starts with a local folder's name
            path_like = isinstance(spec, str) and (spec.startswith((".", "/", "~")) or (
                "/" in spec and Path(spec.split("/", 1)[0]).is_dir()))
            if path_like and not Path(spec).expanduser().exists():
                raise _missing_path(key, spec, where, "a dictionary")


def check_machine(config: Any, where: str, origins: dict[str, str] | None = None) -> None:
    """Cheap checks of a built config against this machine, by field name, so that a typo
    fails before any work: ``device`` must be one torch can use here; ``model``, ``data``,
    ``cache``, ``dictionary`` and ``dictionaries`` must exist where they name a local path
    (a name that could be a Hugging Face id, a registry id or a built-in corpus is left to
    its loader, which says what it tried); every hook's layer must exist in a local model
    (its config.json, read without loading weights). ``origins``: ``{key: "--set ..."}``
    for values an override gave, named in the error instead of ``where``."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    for key, value in values.items():
        _check_local(key, value, (origins or {}).get(key, where))
    check_hook_layers(values, where, origins)


def _common_ranges(cls: type) -> dict[str, tuple[float, float | None]]:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    out = {}
    for key, (lo, hi) in COMMON_RANGES.items():
        d = defaults.get(key, dataclasses.MISSING)
        if d is dataclasses.MISSING or d is None or (isinstance(d, (int, float)) and lo <= d
                                                      and (hi is None or d <= hi)):
            out[key] = (lo, hi)
    return out


def check_values(cls: type, values: dict[str, Any], where: str) -> None:
    """Each value fits its field's annotation, the class's ``RANGES`` and ``POSITIVE``
    fields, or a ValueError naming ``where`` (the file) and the key, and what it takes."""
    hints = type_hints(cls)
    ranges = {**_common_ranges(cls), **getattr(cls, "RANGES", {})}
    for key, value in values.items():
        hint = hints.get(key, Any)
        if not type_ok(value, hint):
            raise ValueError(f"{where}: key {key!r} must be {hint_name(hint)}, got {value!r}")
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            pass
        elif key in getattr(cls, "POSITIVE", ()) and value <= 0:
            raise ValueError(f"{where}: key {key!r} must be positive, got {value!r}")
        elif key in ranges:
            lo, hi = ranges[key]
            if value < lo or (hi is not None and value > hi):
                span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ValueError(f"{where}: key {key!r} must be {span}, got {value!r}")
        check_hook_names(key, value, where)
        if key == "sweep" and cls is TrainConfig:
            for entry in value:
                check_values(cls, {k: v for k, v in entry.items() if k not in ("hook", "sweep")},
                             f"{where}: sweep entry {entry}")


def _local_layers(model: Any) -> int | None:
    """The layer count a local model directory's config.json states (native or Hugging
    Face), or None when it is not a local directory or does not say."""
    if not isinstance(model, str):
        return None
    path = Path(model).expanduser()
    path = path if path.is_dir() else REPO / path
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    layers = next((cfg[k] for k in ("n_layers", "num_hidden_layers", "n_layer") if k in cfg), None)
    return layers if isinstance(layers, int) and not isinstance(layers, bool) else None


def check_hook_layers(values: dict[str, Any], where: str, origins: dict[str, str] | None = None) -> None:
    """Every hook's layer exists in the model, where the model is a local directory whose
    config.json says how many layers it has (read without loading the weights).
    ``origins``: ``{key: "--set ..."}`` for values an override gave, named instead of ``where``."""
    layers = _local_layers(values.get("model"))
    if layers is None:
        return
    for key in ("hook", "hook_out", "hooks"):
        value = values.get(key)
        for hook in value if isinstance(value, list) else [value]:
            m = HOOK_RE.match(hook) if isinstance(hook, str) else None
            if m is not None and int(m.group(1)) >= layers:
                at = (origins or {}).get(key, where)
                raise ValueError(f"{at}: key {key!r} names hook {hook!r}, but model {values['model']!r} has "
                                 f"{layers} layers (0..{layers - 1})")


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` after every check of the module docstring, and ``validate(where)``
    where the class has one; any failure is a ValueError that starts with ``where``."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    missing = sorted(name for name, f in fields.items() if name not in values
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise ValueError(f"{where}: missing required key(s) {missing} (set them in the TOML file, with "
                         f"--set, or with the flags {flags})")
    check_values(cls, values, where)
    try:
        config = cls(**values)
    except (TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{where}: {e}") from e
    except ValueError as e:  # a __post_init__ check: name where it came from
        raise ValueError(e if str(e).startswith(where) else f"{where}: {e}") from e
    if hasattr(config, "validate"):
        config.validate(where)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"recipe {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ValueError(f"{path}: unreadable ({e})") from None


def load_config(path: Any, overrides: list[str] | None = None, cls: type = TrainConfig, *,
                machine: bool = True) -> Any:
    """A checked config of type ``cls``: from a TOML file (``path``), from a config object
    (an instance of ``cls``, checked again with the overrides applied) or from the
    defaults (``None``), with ``key=value`` overrides applied in order (values parsed as
    TOML; ``options.NAME=value`` sets one entry of a table field ``options``).
    ``machine`` (the default, what every job entry wants) also checks the config against
    this machine (:func:`check_machine`: the device, local paths, hook layers); ``False``
    checks the config alone, for a recipe meant for another machine or for files an
    earlier step makes (a cache ``saekit harvest`` writes first).

    Raises
    ------
    ValueError
        Naming the file (or ``defaults``/``config``) and the key for a value from the file;
        naming the ``--set`` item for a value from an override.
    FileNotFoundError
        When ``path`` names no file.
    """
    if isinstance(path, cls):
        values = {f.name: getattr(path, f.name) for f in dataclasses.fields(cls) if f.init}
        where = f"{cls.__name__} given"
    elif path is not None:
        if not isinstance(path, (str, Path)):
            raise ValueError(f"expected a {cls.__name__}, a TOML file or None, got {type(path).__name__} {path!r}")
        path = Path(path)
        values, where = _read_toml(path), str(path)
    else:
        values, where = {}, "defaults"
    values = dict(values)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    origins: dict[str, str] = {}
    for item in overrides or []:
        key, text = parse_override(item)
        value = parse_value(text)
        at = f"--set {item}"
        if key.startswith("options.") and "options" in fields:
            options = values.get("options", {})
            if not isinstance(options, dict):
                raise ValueError(f"{where}: key 'options' must be a table, got {options!r}")
            values["options"] = {**options, key.removeprefix("options."): value}
            continue
        if key not in fields:
            raise ValueError(f"{at}: unknown key {key!r}; allowed: {sorted(fields)}")
        check_values(cls, {key: value}, at)
        values[key] = value
        origins[key] = at
    config = build_config(cls, values, where)
    if machine:
        check_machine(config, where, origins)
    return config
