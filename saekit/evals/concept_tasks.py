"""Labelled token positions for the concept evaluators (sparse probing, TPP, absorption).

Three tasks, each a function ``(cfg, model) -> (tokens, labels per token, concept names)``
with label -1 for a token that carries no concept:

- ``planted``: the demo LM's planted concepts (``saekit.data.concept_labels``), by family
  or group (``level``).
- ``first_letter``: Chanin et al.'s absorption task on real text. A token that is a word
  (an optional leading space or ``Ġ``/``▁`` marker, then only ASCII letters, at least
  ``min_letters`` of them) is labelled by its first letter, ``a`` to ``z``; other tokens
  are unlabelled. SAEBench presents single words in an in-context prompt and probes the
  word's last token; saekit probes words where they occur in the text, which needs no
  prompt template and keeps the activations in the distribution the dictionary was
  trained on.
- ``source``: which text a token comes from, one concept per entry of ``sources`` (e.g.
  English prose against Python documentation), an equal share of the tokens from each.
  SAEBench's tasks probe text-level labels of datasets that cannot be downloaded here;
  this is the per-token version on text that installs offline.
"""

from __future__ import annotations

import string
from typing import Any

import torch
from torch import Tensor

from saekit.data import CONCEPTS, concept_groups, concept_labels, load_tokens
from saekit.tokenization import token_strings

TASKS = ("planted", "first_letter", "source")
#: Word-start markers of byte-level BPE (``Ġ``) and SentencePiece (``▁``) vocabularies.
WORD_START = (" ", "Ġ", "▁")


def first_letter_lookup(vocab: list[str], min_letters: int = 2) -> Tensor:
    """``[len(vocab)]``: the first letter's index (0 for ``a``) of each token that is a
    word, -1 for the others (see the module docstring)."""
    lut = torch.full((len(vocab),), -1, dtype=torch.long)
    for i, s in enumerate(vocab):
        w = s[1:] if s[:1] in WORD_START else s
        if len(w) >= min_letters and w.isascii() and w.isalpha():
            lut[i] = string.ascii_lowercase.index(w[0].lower())
    return lut


def planted(cfg: Any, model: Any) -> tuple[Tensor, Tensor, list[str]]:
    tokens = load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len, seed=cfg.seed)
    names = list(CONCEPTS) if cfg.level == "family" else [f"{f}/{g}" for f, g in concept_groups()]
    return tokens, concept_labels(tokens, model, cfg.level), names


def first_letter(cfg: Any, model: Any) -> tuple[Tensor, Tensor, list[str]]:
    tokens = load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len, seed=cfg.seed)
    lut = first_letter_lookup(token_strings(model))
    return tokens, lut[tokens.clamp_max(len(lut) - 1)], list(string.ascii_lowercase)


def source(cfg: Any, model: Any) -> tuple[Tensor, Tensor, list[str]]:
    if len(cfg.sources) < 2:
        raise ValueError(f"task 'source' needs at least two text sources, got sources={cfg.sources!r}")
    share = -(-cfg.n_tokens // len(cfg.sources))
    parts = [load_tokens(src, model, share, cfg.ctx_len, seed=cfg.seed) for src in cfg.sources]
    labels = [torch.full(p.shape, i, dtype=torch.long) for i, p in enumerate(parts)]
    return torch.cat(parts), torch.cat(labels), [str(s) for s in cfg.sources]


def task_tokens(cfg: Any, model: Any) -> tuple[Tensor, Tensor, list[str]]:
    """``(tokens [windows, ctx_len], label per token, concept names)`` of ``cfg.task``."""
    if cfg.task not in TASKS:
        raise ValueError(f"Config.task must be one of {TASKS}, got {cfg.task!r}")
    return {"planted": planted, "first_letter": first_letter, "source": source}[cfg.task](cfg, model)
