"""Public releases by id (``checkpoints/registry.toml``) and downloads from the Hugging Face hub.

A release is a TOML table::

    [gpt2-small-res-jb]
    repo_id = "jbloom/GPT2-Small-SAEs-Reformatted"
    format = "saelens"
    model = "gpt2"
    processing = "hooked"           # the model weights the activations came from
    id = "blocks.{layer}.hook_resid_pre"
    path = "blocks.{layer}.hook_resid_pre"
    hook = "blocks.{layer}.hook_resid_pre"
    # hook_out = "blocks.{layer}.hook_mlp_out"   # transcoders: the hook they predict

``RELEASE/ID`` names one dictionary: ``ID`` is matched against the ``id`` pattern (``{layer}``
matches digits, any other ``{name}`` one path component), and the fields it binds fill in
``path`` (a folder or file of the repository) and ``hook``. Files come through
``huggingface_hub.hf_hub_download``: from the hub when online, from the local HF cache
offline (``HF_HUB_OFFLINE=1``, or no network: :mod:`saekit.hub` finds that out once, fast),
where tests put them.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from saekit.formats.readers import FORMATS, FormatError
from saekit.hub import hub_session, hub_state, missing_message, repo_in_cache

REGISTRY_FILE = Path(__file__).resolve().parents[2] / "checkpoints" / "registry.toml"
FIELDS = {"repo_id", "format", "model", "processing", "id", "path", "hook", "hook_out", "revision", "description"}
REQUIRED = ("repo_id", "format", "id", "path")

#: The files each format needs (and may have) below a release's ``path``.
FILES = {
    "saekit": (["cfg.json", "sae_weights.safetensors"], ["saekit_extra.safetensors", "sparsity.safetensors"]),
    "saelens": (["cfg.json", "sae_weights.safetensors"], ["sparsity.safetensors"]),
    "sparsify": (["cfg.json", "sae.safetensors"], []),
    "dictionary_learning": (["config.json", "ae.pt"], []),
}


def registry_path() -> Path:
    return Path(os.environ.get("SAEKIT_REGISTRY", REGISTRY_FILE))


def load_registry(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every release of the registry file, checked."""
    path = Path(path) if path is not None else registry_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: registry file missing") from None
    except tomllib.TOMLDecodeError as e:
        raise FormatError(f"{path}: not valid TOML ({e})") from e
    for name, r in data.items():
        if not isinstance(r, dict):
            raise FormatError(f"{path}: [{name}] must be a table")
        unknown = set(r) - FIELDS
        missing = [f for f in REQUIRED if f not in r]
        if unknown or missing:
            raise FormatError(f"{path}: [{name}] " + (f"unknown field(s) {sorted(unknown)} " if unknown else "")
                              + (f"missing field(s) {missing}" if missing else ""))
        if r["format"] not in FORMATS:
            raise FormatError(f"{path}: [{name}] format {r['format']!r} is not one of {FORMATS}")
    return data


def _pattern(template: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos:m.start()])
        out += rf"(?P<{m.group(1)}>\d+)" if m.group(1) == "layer" else rf"(?P<{m.group(1)}>[^/]+)"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]))


def resolve(spec: str, registry: dict[str, dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The release entry for ``RELEASE/ID`` with its patterns filled in, or None when
    ``RELEASE`` is not in the registry. An ``ID`` that does not match raises."""
    registry = load_registry() if registry is None else registry
    name, _, sae_id = spec.partition("/")
    if name not in registry:
        return None
    r = registry[name]
    m = _pattern(r["id"]).fullmatch(sae_id)
    if m is None:
        raise FormatError(f"{spec!r}: release {name!r} has ids of the form {r['id']!r}; got {sae_id!r}")
    fields = m.groupdict()
    return {**r, "release": name, "id": sae_id, "path": r["path"].format(**fields),
            "hook": r["hook"].format(**fields) if r.get("hook") else None,
            "hook_out": r["hook_out"].format(**fields) if r.get("hook_out") else None}


def fetch(repo_id: str, path: str, fmt: str | None = None, revision: str | None = None) -> Path:
    """Download (or find in the HF cache) what a checkpoint at ``repo_id``/``path`` needs;
    return its local path. With no ``fmt``, the files present decide it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    def get(name: str, required: bool = True) -> Path | None:
        filename = f"{path}/{name}" if path and name else (name or path)
        with hub_session() as state:  # no network: the cache at once, not five retries per file
            try:
                return Path(hf_hub_download(repo_id, filename, revision=revision))
            except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError) as e:
                if not required:
                    return None
                gone = isinstance(e, (EntryNotFoundError, RepositoryNotFoundError)) and state.online
                why = missing_message("file", f"hf://{repo_id}/{filename}", state, cached=False, not_on_hub=gone)
                raise FormatError(why) from e

    if path.endswith((".npz", ".pt", ".pth")):
        return get("")  # type: ignore[return-value]
    if fmt is None:
        for candidate, (needed, _) in FILES.items():
            if candidate != "saekit" and get(needed[0], required=False) is not None:
                found = get(needed[-1], required=False)
                if found is not None:
                    fmt = candidate
                    break
        else:
            if get("params.npz", required=False) is not None:
                fmt = "gemma_scope"
            elif get("params.safetensors", required=False) is not None:
                fmt = "gemma_scope_2"
            else:
                state = hub_state()
                if not state.online and not repo_in_cache(repo_id):  # say so, not "no checkpoint there"
                    raise FormatError(missing_message("checkpoint", f"hf://{repo_id}/{path}", state, cached=False,
                                                      not_on_hub=False))
                raise FormatError(f"hf://{repo_id}/{path}: no checkpoint saekit knows there "
                                  "(cfg.json, config.json + ae.pt, params.npz or params.safetensors)")
    if fmt == "gemma_scope":
        return get("params.npz")  # type: ignore[return-value]
    if fmt == "gemma_scope_2":
        get("config.json", required=False)  # optional: the folder name says what the file is
        return get("params.safetensors").parent  # type: ignore[union-attr]
    if fmt == "openai":
        raise FormatError(f"hf://{repo_id}/{path}: an OpenAI checkpoint is one .pt file; give its path")
    needed, optional = FILES[fmt]
    if fmt == "saelens":  # a saekit directory is a SAELens one with extra files
        optional = FILES["saekit"][1]
    local = [get(f) for f in needed] + [get(f, required=False) for f in optional]
    return local[0].parent  # type: ignore[union-attr]
