"""Checkpoints of other libraries: detect, load, export; public releases by registry id.

>>> d = saekit.load_dictionary("path/to/sae")                           # doctest: +SKIP
>>> d = saekit.load_dictionary("gpt2-small-res-jb/blocks.8.hook_resid_pre")   # doctest: +SKIP
>>> saekit.formats.export(d, "out/sae", to="saelens")                   # doctest: +SKIP

Formats read: ``saekit`` (the native directory), ``saelens``, ``sparsify``,
``dictionary_learning``, ``gemma_scope``, ``gemma_scope_2`` and ``openai`` (see
:mod:`saekit.formats.readers` for what each reproduces). Formats written: ``saekit`` (any kind), ``saelens`` (the
strict SAELens layout, SAE kinds), ``sparsify`` (TopK on raw inputs) and ``circuit_tracer``
(per-layer transcoders); :func:`export_targets` says which a dictionary can be written as.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saekit.dictionaries.base import Dictionary
from saekit.dictionaries.sae import SAE
from saekit.formats import readers, registry
from saekit.formats.circuit_tracer import circuit_tracer_problem, export_circuit_tracer
from saekit.formats.readers import FORMATS, READERS, FormatError
from saekit.models import portable_spec
from saekit.schema import plural

EXPORTS = ("saekit", "saelens", "sparsify", "circuit_tracer")


def detect(path: str | Path) -> tuple[str, Path]:
    """``(format, path to read)`` of a checkpoint file or directory."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".npz":
            return "gemma_scope", path
        if path.name == "params.safetensors":
            return "gemma_scope_2", path.parent
        if path.suffix in (".pt", ".pth"):
            if (path.parent / "config.json").is_file() and path.name == "ae.pt":
                return "dictionary_learning", path.parent
            return "openai", path
        if (path.parent / "cfg.json").is_file():
            return detect(path.parent)
        raise FormatError(f"{path}: not a checkpoint saekit knows (.npz, .pt, or a file of a dictionary directory)")
    if not path.is_dir():
        raise FormatError(f"{path}: no such file or directory")
    if (path / "cfg.json").is_file():
        cfg = readers.read_json(path / "cfg.json")
        if "saekit" in cfg:
            return "saekit", path
        if (path / "sae_weights.safetensors").is_file():
            return "saelens", path
        if (path / "sae.safetensors").is_file():
            return "sparsify", path
        raise FormatError(f"{path}: has cfg.json but neither sae_weights.safetensors (SAELens) "
                          "nor sae.safetensors (sparsify)")
    if (path / "ae.pt").is_file() and (path / "config.json").is_file():
        return "dictionary_learning", path
    if (path / "params.npz").is_file():
        return "gemma_scope", path / "params.npz"
    if (path / "params.safetensors").is_file():
        return "gemma_scope_2", path
    inner = sorted(p.name for p in path.iterdir() if p.is_dir() and
                   any((p / f).is_file() for f in ("cfg.json", "ae.pt", "params.npz", "params.safetensors")))
    if inner:
        raise FormatError(f"{path}: a directory of {plural(len(inner), 'dictionary')}; load "
                          + ("it: " if len(inner) == 1 else "one of them: ")
                          + ", ".join(str(path / name) for name in inner[:8]) + (" ..." if len(inner) > 8 else ""))
    raise FormatError(f"{path}: unknown layout; expected a saekit/SAELens directory (cfg.json + "
                      "sae_weights.safetensors), a sparsify hookpoint (cfg.json + sae.safetensors), "
                      "dictionary_learning (ae.pt + config.json), Gemma Scope params.npz, Gemma Scope 2 "
                      "params.safetensors or an OpenAI .pt")


def load(path: str | Path, device: Any = None, fold_decoder_norms: bool = True, **overrides: Any):
    """Load a checkpoint of any known format as a saekit :class:`~saekit.Dictionary`.

    ``overrides`` (``hook``, ``hook_out``, ``model``, ``processing``) replace what the file says or
    leaves out, as the registry does for releases whose files do not name their hook.
    """
    fmt, where = detect(path)
    if fmt == "saekit":
        d = Dictionary.load(where)
    else:
        d = READERS[fmt](where, fold=fold_decoder_norms)
        d.cfg.metadata.setdefault("source_path", portable_spec(where))
    for name, value in overrides.items():
        if name not in ("hook", "hook_out", "model", "processing"):
            raise TypeError(f"unknown override {name!r}; allowed: hook, hook_out, model, processing")
        if name == "hook_out" and value is not None and not d.cfg.is_transcoder:
            raise FormatError(f"{path}: hook_out={value!r} given, but the file holds an SAE, not a transcoder")
        if value is not None:
            setattr(d.cfg, name, value)
    return d.to(device) if device is not None else d


def _sparsify_problem(d: Any) -> str | None:
    c = d.cfg
    # sparsify's transcoders (transcode=True) read raw inputs and predict an output of the
    # same width; its SAEs subtract b_dec from raw inputs. input_norm "scalar" is folded
    # into the weights at the end of training, so such a dictionary takes raw x too.
    transcoder_ok = c.is_transcoder and c.d_out == c.d_in
    if c.kind != "topk" or c.input_norm == "layer_norm" or (c.is_transcoder and not transcoder_ok) or (
            not c.is_transcoder and not c.options.get("apply_b_dec_to_input", True)):
        return (f"sparsify holds TopK SAEs that subtract b_dec from raw inputs and TopK transcoders with "
                f"d_out = d_in; this is a {c.kind} dictionary with input_norm={c.input_norm!r}, "
                f"apply_b_dec_to_input={c.options.get('apply_b_dec_to_input')}, d_out={c.d_out}")
    return None


def export_problem(dictionary: Any, to: str) -> str | None:
    """Why ``dictionary`` cannot be written as format ``to``, or None when it can."""
    if to not in EXPORTS:
        return f"unknown export format {to!r}; choose one of {EXPORTS}"
    if to == "saekit":
        return None
    if to == "circuit_tracer":
        return circuit_tracer_problem(dictionary)
    kind = dictionary.cfg.kind
    if not isinstance(dictionary, SAE):
        return f"a {kind} dictionary has no {to} form: {to} holds sparse autoencoders only"
    if to == "saelens":
        arch = dictionary.saelens_config()["architecture"]
        if dictionary.cfg.is_transcoder and arch not in SAE.SAELENS_TRANSCODERS.values():
            return (f"SAELens has no {arch} transcoder (its transcoders are "
                    f"{sorted(set(SAE.SAELENS_TRANSCODERS.values()))})")
        return None
    return _sparsify_problem(dictionary)


def export_targets(dictionary: Any) -> list[str]:
    """The formats of :data:`EXPORTS` that ``dictionary`` can be written as (``saekit`` always)."""
    return [to for to in EXPORTS if export_problem(dictionary, to) is None]


def export(dictionary: Any, path: str | Path, to: str = "saekit") -> Path:
    """Write ``dictionary`` (or the checkpoint at that path) as ``to``:

    - ``saekit``: the native directory, any kind;
    - ``saelens``: the strict SAELens layout (no saekit section; SAE kinds only; a
      BatchTopK becomes SAELens' JumpReLU with ``training_architecture`` recorded);
    - ``sparsify``: a sparsify hookpoint directory (``cfg.json`` + ``sae.safetensors``),
      TopK on raw inputs only (SAEs, and transcoders with d_out = d_in, skip term
      included; saekit's default ``input_norm="scalar"`` is folded into the weights, so
      it qualifies). ``path`` is that hookpoint directory; sparsify names the hookpoint by
      the folder, so saekit also records its own hook names in ``cfg.json`` under
      ``saekit_hook``/``saekit_hook_out`` (and ``saekit_model``/``saekit_processing``;
      sparsify drops keys it does not know) and reads them back;
    - ``circuit_tracer``: a per-layer transcoder set, ``layer_{L}.safetensors`` for each of
      a list of transcoders (layers 0..N-1) + ``config.yaml``
      (:mod:`saekit.formats.circuit_tracer`).

    A dictionary a format cannot hold is refused with a ValueError that says why and
    lists the formats it can be written as (:func:`export_targets`).
    """
    if isinstance(dictionary, (list, tuple)):
        if to != "circuit_tracer":
            raise ValueError(f"a list of dictionaries exports only as circuit_tracer's transcoder set, not {to!r}")
        return export_circuit_tracer([load(x) if isinstance(x, (str, Path)) else x for x in dictionary], path)
    d = load(dictionary) if isinstance(dictionary, (str, Path)) else dictionary
    if to not in EXPORTS:
        raise ValueError(f"unknown export format {to!r}; choose one of {EXPORTS}")
    problem = export_problem(d, to)
    if problem is not None:
        works = export_targets(d)
        raise ValueError(f"{problem}. This {d.cfg.kind} {'transcoder' if d.cfg.is_transcoder else 'dictionary'} "
                         f"can be written as: {', '.join(works)} (--to {works[-1]})")
    if to == "saekit":
        return d.save(path)
    if to == "circuit_tracer":
        return export_circuit_tracer(d, path)
    if to == "saelens":
        return d.write_directory(path, d.saelens_config(), d.saelens_tensors())
    c = d.cfg
    skip = c.options.get("skip", False)
    cfg = {"activation": "topk", "expansion_factor": max(1, c.d_dict // c.d_in), "normalize_decoder": True,
           "num_latents": c.d_dict, "k": c.k, "multi_topk": False, "skip_connection": bool(skip),
           "transcode": c.is_transcoder, "d_in": c.d_in,
           **{f"saekit_{name}": getattr(c, name) for name in ("hook", "hook_out", "model", "processing")
              if getattr(c, name)}}
    tensors = {"encoder.weight": d.enc_weight, "encoder.bias": d.b_enc, "W_dec": d.W_dec, "b_dec": d.b_dec}
    if skip:
        tensors["W_skip"] = d.W_skip  # [d_out, d_in]: sparsify adds x @ W_skip.mT
    return d.write_directory(path, cfg, tensors, weights="sae.safetensors")


def load_dictionary(spec: str | Path, device: Any = None, fold_decoder_norms: bool = True) -> Dictionary:
    """Load a dictionary: an existing path wins (saekit, SAELens, sparsify,
    dictionary_learning, Gemma Scope or OpenAI layout, detected); then a registry id
    ``RELEASE/ID`` (``checkpoints/registry.toml``); ``hf://org/repo/path`` forces the hub.
    Downloads go through the Hugging Face cache, so offline runs use what is cached.
    ``fold_decoder_norms``: see :mod:`saekit.formats.readers`."""
    s = str(spec)
    if s.startswith("hf://"):
        parts = s.removeprefix("hf://").strip("/").split("/")
        if len(parts) < 2:
            raise ValueError(f"{s!r}: expected hf://org/repo[/path]")
        local = registry.fetch("/".join(parts[:2]), "/".join(parts[2:]))
        return load(local, device, fold_decoder_norms)
    if Path(s).exists():
        return load(s, device, fold_decoder_norms)
    entry = registry.resolve(s) if "/" in s and not Path(s).is_absolute() else None
    if entry is None:
        known = ", ".join(sorted(registry.load_registry())[:12])
        raise FileNotFoundError(f"{s}: no such file or directory, and not a registry id RELEASE/ID "
                                f"(releases in {registry.registry_path()}: {known}); hf://org/repo/path reads the hub")
    try:
        local = registry.fetch(entry["repo_id"], entry["path"], entry["format"], entry.get("revision"))
    except FormatError as e:
        raise FormatError(f"registry id {s!r} (release [{entry['release']}] of {registry.registry_path()}): "
                          f"{e}") from e
    return load(local, device, fold_decoder_norms, hook=entry["hook"], hook_out=entry.get("hook_out"),
                model=entry.get("model"), processing=entry.get("processing"))


__all__ = ["EXPORTS", "FORMATS", "READERS", "FormatError", "detect", "export", "export_problem", "export_targets",
           "load", "load_dictionary"]
