"""Dictionaries: one interface (``Dictionary``) for SAEs and SNMF."""

from saekit.dictionaries import sae, snmf  # noqa: F401  (register the kinds)
from saekit.dictionaries.base import REGISTRY, Dictionary, DictionaryConfig, register
from saekit.dictionaries.sae import SAE, TrainStep


def load_dictionary(spec, device=None, fold_decoder_norms: bool = True) -> Dictionary:
    """Load a dictionary: an existing path wins (saekit, SAELens, sparsify,
    dictionary_learning, Gemma Scope or OpenAI layout, detected); then a registry id
    ``RELEASE/ID`` (``checkpoints/registry.toml``); ``hf://org/repo/path`` forces the hub.
    Downloads go through the Hugging Face cache, so offline runs use what is cached.
    ``fold_decoder_norms``: see :mod:`saekit.formats.readers`."""
    from pathlib import Path

    from saekit import formats
    from saekit.formats import registry

    s = str(spec)
    if s.startswith("hf://"):
        parts = s.removeprefix("hf://").strip("/").split("/")
        if len(parts) < 2:
            raise ValueError(f"{s!r}: expected hf://org/repo[/path]")
        local = registry.fetch("/".join(parts[:2]), "/".join(parts[2:]))
        return formats.load(local, device, fold_decoder_norms)
    if Path(s).exists():
        return formats.load(s, device, fold_decoder_norms)
    entry = registry.resolve(s) if "/" in s and not Path(s).is_absolute() else None
    if entry is None:
        known = ", ".join(sorted(registry.load_registry())[:12])
        raise FileNotFoundError(f"{s}: no such file or directory, and not a registry id RELEASE/ID "
                                f"(releases in {registry.registry_path()}: {known}); hf://org/repo/path reads the hub")
    local = registry.fetch(entry["repo_id"], entry["path"], entry["format"], entry.get("revision"))
    return formats.load(local, device, fold_decoder_norms, hook=entry["hook"], model=entry.get("model"),
                        processing=entry.get("processing"))


__all__ = ["REGISTRY", "SAE", "Dictionary", "DictionaryConfig", "TrainStep", "load_dictionary", "register"]
