"""Run configs: one dataclass per job, loaded from TOML, overridable with ``--set``.

Unknown keys are refused with the list of allowed ones, and every value is checked
against its field's declared type (and, for ``TrainConfig``, its range), so a typo or
a wrong type in a recipe fails before any work is done with a ``ValueError`` that names
the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """One SAE training run (``saekit train CONFIG.toml``); every field can be ``--set``."""

    model: str = "checkpoints/demo-lm"
    """Model spec for ``saekit.load_model``."""
    hook: str | list[str] = "blocks.2.mlp.hook_post"
    """Hook to train on, or a list: one dictionary per hook, all from one harvest."""
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
    kind: str = "topk"
    d_dict: int = 4096
    k: int | None = 32
    batch_size: int = 4096
    lr: float | None = None
    """Default: 2e-4 / sqrt(d_dict / 2^14), raised for short runs (``saekit.training.schedule.default_lr``)."""
    seed: int = 0
    warmup_steps: int | None = None
    decay_start: float = 0.8
    input_norm: str = "scalar"
    b_dec_init: str = "geometric_median"
    dead_tokens: int | None = None
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
    autocast: bool = False
    """bf16 autocast for the SAE forward and backward (parameters stay fp32)."""
    compile: bool = False
    """``torch.compile`` the SAE's forward and loss."""
    wandb_project: str | None = None
    """Also log to this wandb project (metrics.jsonl is always written)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Kind-specific hyperparameters (e.g. ``aux_coefficient``, ``l1_coefficient``)."""
    sweep: list[dict[str, Any]] = field(default_factory=list)
    """Variants trained on the same activations, each a table of fields to override
    (e.g. ``[{k = 16}, {k = 32}]``); one dictionary per hook and variant."""

    def runs(self) -> list[tuple[str, TrainConfig]]:
        """``(name, config)`` for every hook × variant; the name is "" for a single run."""
        hooks = self.hook if isinstance(self.hook, list) else [self.hook]
        variants = self.sweep or [{}]
        out = []
        for h in hooks:
            for v in variants:
                bad = sorted(set(v) - {f.name for f in dataclasses.fields(self)} | ({"hook", "sweep"} & set(v)))
                if bad:
                    raise ValueError(f"sweep entry {v}: cannot set {bad}")
                name = h + "".join(f"__{key}={val}" for key, val in v.items())
                out.append((name if len(hooks) * len(variants) > 1 else "",
                            dataclasses.replace(self, hook=h, sweep=[], **v)))
        return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a field's annotation (ints where floats are declared are
    fine; bools are not ints). Annotations it does not understand accept anything."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(_type_ok(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return isinstance(value, dict) and (not args or all(_type_ok(v, args[1]) for v in value.values()))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    return True


#: TrainConfig fields with a range: (lowest allowed, highest allowed or None).
_RANGES: dict[str, tuple[float, float | None]] = {
    **{name: (1, None) for name in ("n_tokens", "ctx_len", "d_dict", "k", "batch_size", "buffer_mb", "log_every",
                                    "dead_tokens")},
    **{name: (0, None) for name in ("checkpoint_every", "eval_every", "eval_tokens", "warmup_steps", "seed")},
    "decay_start": (0.0, 1.0),
}


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def check_values(cls: type, values: dict[str, Any], where: str) -> None:
    """Each value fits its field's annotation (and TrainConfig's ranges), or a ValueError
    naming the file and key."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: check nothing rather than fail
        hints = {}
    for key, value in values.items():
        hint = hints.get(key, Any)
        if not _type_ok(value, hint):
            raise ValueError(f"{where}: key {key!r} must be {_hint_name(hint)}, got {value!r}")
        if cls is TrainConfig:
            if key == "lr" and value is not None and value <= 0:
                raise ValueError(f"{where}: key 'lr' must be positive, got {value!r}")
            if key in _RANGES and value is not None:
                lo, hi = _RANGES[key]
                if value < lo or (hi is not None and value > hi):
                    span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                    raise ValueError(f"{where}: key {key!r} must be {span}, got {value!r}")
            if key == "sweep":
                for entry in value:
                    check_values(cls, {k: v for k, v in entry.items() if k not in ("hook", "sweep")},
                                 f"{where}: sweep entry {entry}")


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    check_values(cls, values, where)
    try:
        return cls(**values)
    except (TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{where}: {e}") from e


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls: type = TrainConfig) -> Any:
    """Read a TOML recipe and apply ``key=value`` overrides (values parsed as TOML)."""
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"recipe {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from None
        except OSError as e:
            raise ValueError(f"{path}: unreadable ({e})") from None
        where = str(path)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key = key.strip()
        if key.startswith("options."):
            if not isinstance(values.setdefault("options", {}), dict):
                raise ValueError(f"{where}: key 'options' must be a table, got {values['options']!r}")
            values["options"][key.removeprefix("options.")] = _parse_value(text.strip())
        else:
            values[key] = _parse_value(text.strip())
    return build_config(cls, values, where)
