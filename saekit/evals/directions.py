"""Steering directions for planted or named concepts: the concepts' token ids and
positions, the dictionary feature, difference-in-means and random directions chosen for
each concept (:class:`DirectionSelector`), and the logit lens of a direction.
Used by :mod:`saekit.evals.steering`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from saekit.compare import ConceptCounts
from saekit.data import CONCEPTS, get_tokenizer
from saekit.metrics import unit_rows
from saekit.models import HookedModel, W_out, validate_hook

SELECT_MODES = ("output", "input")
RANDOM_KINDS = ("isotropic", "covariance")
#: Labelled positions a concept needs before a feature or a DiffMean is chosen for it.
MIN_CONCEPT_POSITIONS = 5


class Direction(NamedTuple):
    """One steering direction."""

    method: str
    """Label of how it was made: ``NAME/output``, ``diffmean/input``, ``random``."""
    source: str
    """The dictionary's name, ``diffmean`` or ``random``."""
    select_by: str
    """``output`` or ``input``; empty for random directions."""
    concept: str | None
    """The concept it was chosen for; None for random directions (a control for all)."""
    feature: int
    """Dictionary feature index; the random direction's index; -1 for DiffMean."""
    selection_f1: float
    """F1 of the feature's firing against the concept's positions (NaN if not a feature)."""
    sign: int
    """+1 or -1: the direction is ``sign`` times the unit vector."""
    vector: Tensor
    """Unit vector ``[hook width]`` (sign applied)."""


# --------------------------------------------------------------------------- concepts


def concept_vocabulary(model: HookedModel, concepts: dict[str, list[str]] | None = None) -> dict[str, list[int]]:
    """Token ids of each concept's words (``" " + word``, one token each).

    ``None``: the planted families of the demo corpus (``saekit.data.CONCEPTS``), the
    same tokens as :func:`saekit.data.concept_token_ids`. A word that is several tokens
    is skipped with a warning; a concept left with none, or a token claimed by two
    concepts, is an error.
    """
    if concepts is None:
        concepts = planted_concepts()
    if not isinstance(concepts, dict) or not concepts:
        raise ValueError(f"concepts must be a non-empty table of name -> list of words, got {concepts!r}")
    tok = get_tokenizer(model)
    vocab: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, words in concepts.items():
        if isinstance(words, str) or not all(isinstance(w, str) and w.strip() for w in words):
            raise ValueError(f"concepts[{name!r}] must be a list of words, got {words!r}")
        ids, skipped = [], []
        for w in words:
            enc = tok(" " + w.strip(), add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                skipped.append(w)
                continue
            if owner.get(enc[0], name) != name:
                raise ValueError(f"concepts: {w!r} is a token of both {owner[enc[0]]!r} and {name!r}")
            owner[enc[0]] = name
            ids.append(enc[0])
        if skipped:
            warnings.warn(f"concept {name!r}: skipped {skipped}, not one token with a leading space", stacklevel=2)
        if not ids:
            raise ValueError(f"concepts[{name!r}]: none of {words} is a single token with a leading space "
                             "under this tokenizer")
        vocab[name] = sorted(set(ids))
    return vocab


def concept_positions(tokens: Tensor, vocab: dict[str, list[int]]) -> tuple[Tensor, Tensor]:
    """``(current, next)``: per position the index of the concept (in ``vocab`` order)
    whose word is the token itself / the next token, -1 for none."""
    lut = torch.full((max(int(tokens.max()), max(max(v) for v in vocab.values())) + 1,), -1, dtype=torch.long)
    for c, ids in enumerate(vocab.values()):
        lut[ids] = c
    current = lut[tokens]
    following = torch.full_like(current, -1)
    following[:, :-1] = current[:, 1:]
    return current, following


# --------------------------------------------------------------------------- directions


class DirectionSelector:
    """Chooses the steered directions from a stream of activation batches, in memory
    independent of the number of tokens: per concept and mode, the best-F1 feature of
    each dictionary (``ConceptCounts``, as ``saekit.compare``) and a DiffMean; plus the
    random controls and the median activation norm.

    Call :meth:`update` with each batch's activations ``[n, d]`` at labelled positions
    and their ``current`` / ``following`` concept indices ``[n]`` (-1: none), then
    :meth:`directions`.
    """

    def __init__(self, concepts: list[str], dictionaries: list[Any], names: list[str], select_by: list[str],
                 width: int, n_random: int, random_kind: str = "isotropic", seed: int = 0):
        self.concepts, self.dictionaries, self.names, self.select_by = concepts, dictionaries, names, select_by
        self.n_random, self.random_kind = n_random, random_kind
        C = len(concepts)
        self.counts = [{m: ConceptCounts(d.cfg.d_dict, C, d.W_dec.device) for m in select_by} for d in dictionaries]
        self.sums = {m: torch.zeros(C, width, dtype=torch.float64) for m in select_by}
        self.positions = {m: torch.zeros(C, dtype=torch.long) for m in select_by}
        self.neutral_sum, self.neutral_n = torch.zeros(width, dtype=torch.float64), 0
        self.total_sum, self.n = torch.zeros(width, dtype=torch.float64), 0
        # Covariance-shaped random directions Σ_i g_i (a_i − μ) = Σ_i g_i a_i − (Σ_i g_i) μ, streamed.
        self.gen = torch.Generator().manual_seed(seed)
        self.g_acts = torch.zeros(n_random, width, dtype=torch.float64)
        self.g_sum = torch.zeros(n_random, 1, dtype=torch.float64)
        self.norms: list[Tensor] = []

    @torch.no_grad()
    def update(self, acts: Tensor, current: Tensor, following: Tensor,
               inputs: dict[str, Tensor] | None = None) -> None:
        """``inputs``: the same rows at the hooks transcoders encode, by hook name (a
        transcoder that writes the steered hook reads another)."""
        labels = {"input": current, "output": following}
        for d, counts in zip(self.dictionaries, self.counts, strict=True):
            x = inputs[d.cfg.hook] if d.cfg.is_transcoder and inputs and d.cfg.hook in inputs else acts
            active = d.active(d.encode(x.to(d.W_dec.device, d.W_dec.dtype)))
            for m in self.select_by:
                counts[m].update(active, labels[m])
        x = acts.double().cpu()
        for m in self.select_by:
            lab = labels[m].cpu()
            onehot = torch.nn.functional.one_hot(lab.clamp_min(0), len(self.concepts)).double() * (lab >= 0)[:, None]
            self.sums[m] += onehot.T @ x
            self.positions[m] += onehot.sum(0).long()
        neutral = ((current < 0) & (following < 0)).cpu()
        self.neutral_sum += x[neutral].sum(0)
        self.neutral_n += int(neutral.sum())
        self.total_sum += x.sum(0)
        self.n += len(x)
        if self.random_kind == "covariance" and self.n_random:
            g = torch.randn(self.n_random, len(x), generator=self.gen, dtype=torch.float64)
            self.g_acts += g @ x
            self.g_sum += g.sum(1, keepdim=True)
        self.norms.append(acts.float().norm(dim=-1).cpu())

    def median_norm(self) -> float:
        """Median L2 norm of the activations seen (the unit of ``strength_unit = "median_norm"``)."""
        return float(torch.cat(self.norms).median())

    def directions(self, signs: tuple[int, ...] | list[int] = (1,)) -> list[Direction]:
        """The directions, each once per sign."""
        for m in self.select_by:
            few = {c: int(n) for c, n in zip(self.concepts, self.positions[m], strict=True) if n < MIN_CONCEPT_POSITIONS}
            if few:
                raise ValueError(f"concept position counts ({m}) {few} are below {MIN_CONCEPT_POSITIONS} in the "
                                 "selection tokens: raise n_tokens, change data, or drop those concepts")
        if self.neutral_n == 0:
            raise ValueError("no neutral positions (no concept word at or after them) in the selection tokens")
        out: list[Direction] = []
        for d, name, counts in zip(self.dictionaries, self.names, self.counts, strict=True):
            W = unit_rows(d.W_dec.detach().float().cpu())
            for m in self.select_by:
                f1 = counts[m].scores()["f1"].cpu()
                for c, concept in enumerate(self.concepts):
                    f = int(f1[:, c].argmax())
                    out.append(Direction(f"{name}/{m}", name, m, concept, f, float(f1[f, c]), 1, W[f]))
        base = self.neutral_sum / self.neutral_n
        for m in self.select_by:
            means = self.sums[m] / self.positions[m][:, None]
            for c, concept in enumerate(self.concepts):
                out.append(Direction(f"diffmean/{m}", "diffmean", m, concept, -1, math.nan, 1,
                                     unit_rows((means[c] - base).float())))
        if self.random_kind == "isotropic":
            rand = torch.randn(self.n_random, len(base), generator=self.gen)
        else:
            rand = (self.g_acts - self.g_sum * (self.total_sum / self.n)).float()
        out += [Direction("random", "random", "", None, r, math.nan, 1, v) for r, v in enumerate(unit_rows(rand))]
        return [d._replace(sign=s, vector=d.vector * s) for s in signs for d in out]


def direction_logits(model: HookedModel, hook: str, vectors: Tensor) -> Tensor:
    """``W_U · LN_final(r)`` for each direction ``[n, d]`` at ``hook``: ``[n, d_vocab]``,
    with ``r`` the direction in the residual stream (via ``W_out`` for ``mlp.hook_post``,
    ``W_O`` for ``attn.hook_z``). LN_final's bias is dropped: it adds the same logits
    to every direction."""
    layer, kind = validate_hook(model, hook)
    W_U = model.W_U.detach()
    v = vectors.to(W_U.device, W_U.dtype)
    if kind == "mlp.hook_post":
        v = v @ W_out(model, layer).to(v.dtype)
    elif kind == "attn.hook_z":
        W_O = model.blocks[layer].attn.W_O.detach()  # [n_heads, d_head, d_model]
        v = torch.einsum("nhd,hdm->nm", v.view(len(v), *W_O.shape[:2]), W_O.to(v.dtype))
    with torch.no_grad():
        ln = getattr(model, "ln_final", None)
        if ln is not None:
            v = ln(v) - ln(torch.zeros_like(v[:1]))
        return (v @ W_U).cpu()


def logit_lens(model: HookedModel, hook: str, vectors: Tensor, k: int) -> Tensor:
    """Top-``k`` token ids of :func:`direction_logits` for each direction."""
    return direction_logits(model, hook, vectors).topk(k, dim=-1).indices


def planted_concepts() -> dict[str, list[str]]:
    """The demo corpus's planted families as concept name -> words."""
    return {fam: [w for words in groups.values() for w in words] for fam, groups in CONCEPTS.items()}
