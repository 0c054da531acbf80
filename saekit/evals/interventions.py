"""Steering machinery: forwards that add a different vector at a hook in every row,
KL-calibrated strengths by batched bisection, and batched generation.

Used by :mod:`saekit.evals.steering` (and by anything else that steers: auto-interp's
intervention scorers). Every forward stacks many (direction, strength, prompt) rows
along the batch axis, ``max_rows`` at a time.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.harvest import model_lock
from saekit.data import get_tokenizer, special_ids
from saekit.evals.common import kl_per_token
from saekit.models import HookedModel, model_device


class Calibration(NamedTuple):
    """Result of the binary search, per direction and target KL."""

    strength: Tensor
    """``[n_directions, n_targets]`` α closest to the target among those evaluated."""
    kl: Tensor
    """``[n_directions, n_targets]`` KL at that α, mean over prompts."""
    calibrated: Tensor
    """``[n_directions, n_targets]`` bool: |KL/target − 1| <= kl_rtol."""
    concept_logprob: Tensor
    """``[n_directions, n_targets, n_prompts, n_concepts]`` log of each concept's total
    next-token probability after each prompt at that α."""
    steps: int
    """Bisection steps run (batched forwards of all unconverged pairs)."""


class Prompts(NamedTuple):
    """Tokenised neutral prompts, BOS first, right-padded."""

    texts: list[str]
    """The prompts as given."""
    tokens: Tensor
    """``[n_prompts, max_len]`` token ids (padding after each prompt)."""
    lengths: Tensor
    """``[n_prompts]`` tokens per prompt, BOS included."""
    pad: int
    """The padding token id."""


def steered_logits(model: HookedModel, hook: str, tokens: Tensor, deltas: Tensor) -> Tensor:
    """Logits ``[rows, seq, vocab]`` with ``deltas[r]`` added at ``hook`` at every
    position but 0 of row ``r`` (``tokens [rows, seq]``, ``deltas [rows, width]``)."""
    def add(x: Tensor, hook: Any = None) -> Tensor:
        flat = x.reshape(*x.shape[:2], -1)
        new = flat + deltas[:, None, :].to(flat.dtype)
        new[:, 0] = flat[:, 0]
        return new.reshape(x.shape)

    with torch.no_grad(), model_lock(model), model.hooks(fwd_hooks=[(hook, add)]):
        return model(tokens)


class SteeredForwards:
    """Batched LM forwards at ``max_rows`` rows each, every row with its own delta at
    ``hook``; counts the rows, tokens and seconds (``summary["lm_tokens_per_s"]``)."""

    def __init__(self, model: HookedModel, hook: str, max_rows: int):
        self.model, self.hook, self.max_rows = model, hook, max_rows
        self.device = model_device(model)
        self.rows = self.tokens = 0
        self.seconds = 0.0

    def logits(self, tokens: Tensor, deltas: Tensor | None) -> Tensor:
        t0 = time.perf_counter()
        tokens = tokens.to(self.device)
        if deltas is None:
            with torch.no_grad():
                out = self.model(tokens)
        else:
            out = steered_logits(self.model, self.hook, tokens, deltas.to(self.device))
        self.rows += tokens.shape[0]
        self.tokens += tokens.numel()
        self.seconds += time.perf_counter() - t0
        return out

    def next_token(self, prompts: Prompts, deltas: Tensor, clean_logp: Tensor | None,
                   concept_ids: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """For each delta ``[n, width]``: KL ``[n, P]`` against ``clean_logp`` (zeros
        when None), concept log-probabilities ``[n, P, C]`` and next-token log-probs
        ``[n, P, vocab]`` only when ``clean_logp`` is None (for the clean run itself)."""
        n, P = len(deltas), len(prompts.texts)
        kl = torch.zeros(n * P)
        lp_c = torch.zeros(n * P, len(concept_ids))
        full = []
        pairs = torch.arange(n * P)
        for lo in range(0, n * P, self.max_rows):
            rows = pairs[lo:lo + self.max_rows]
            v, p = rows // P, rows % P
            logits = self.logits(prompts.tokens[p], deltas[v])
            logp = logits[torch.arange(len(rows), device=logits.device), prompts.lengths[p].to(logits.device) - 1]
            logp = logp.float().log_softmax(-1).cpu()
            if clean_logp is not None:
                kl[rows] = kl_per_token(clean_logp[p], logp)
            else:
                full.append(logp)
            lp_c[rows] = torch.stack([logp[:, ids].logsumexp(-1) for ids in concept_ids], -1)
        logp_all = torch.cat(full).view(n, P, -1) if full else torch.empty(0)
        return kl.view(n, P), lp_c.view(n, P, -1), logp_all


def tokenize_prompts(model: HookedModel, prompts: list[str]) -> Prompts:
    """BOS + each prompt's tokens, right-padded into one tensor."""
    tok = get_tokenizer(model)
    bos, pad = special_ids(model)
    enc = []
    for i, p in enumerate(prompts):
        ids = tok(p, add_special_tokens=False)["input_ids"] if isinstance(p, str) else []
        if not ids:
            raise ValueError(f"prompts[{i}] = {p!r} has no tokens; prompts must be non-empty strings")
        enc.append([bos] + ids)
    lengths = torch.tensor([len(e) for e in enc])
    tokens = torch.full((len(enc), int(lengths.max())), pad, dtype=torch.long)
    for i, e in enumerate(enc):
        tokens[i, :len(e)] = torch.tensor(e)
    return Prompts(list(prompts), tokens, lengths, pad)


def calibrate(fw: SteeredForwards, prompts: Prompts, vectors: Tensor, targets: list[float], clean_logp: Tensor,
              concept_ids: list[Tensor], bracket: tuple[float, float], steps: int, rtol: float,
              progress: bool = False) -> Calibration:
    """Binary search on ``log α`` per (direction, target), all unconverged pairs of a step
    in the same batched forwards; keeps the evaluated α closest to each target."""
    n, T, P, C = len(vectors), len(targets), len(prompts.texts), len(concept_ids)
    target = torch.tensor(targets, dtype=torch.float64).expand(n, T)
    lo = torch.full((n, T), math.log(bracket[0]), dtype=torch.float64)
    hi = torch.full((n, T), math.log(bracket[1]), dtype=torch.float64)
    best_err = torch.full((n, T), math.inf, dtype=torch.float64)
    best_a, best_kl = torch.zeros(n, T, dtype=torch.float64), torch.zeros(n, T, dtype=torch.float64)
    best_lp = torch.zeros(n, T, P, C)
    todo = torch.ones(n, T, dtype=torch.bool)
    it = range(steps)
    if progress:
        it = tqdm(it, desc="calibrate KL", unit="step")
    done = 0
    for _ in it:
        idx = todo.nonzero()
        if len(idx) == 0:
            break
        done += 1
        i, t = idx[:, 0], idx[:, 1]
        mid = (lo[i, t] + hi[i, t]) / 2
        kl, lp, _ = fw.next_token(prompts, vectors[i] * mid.exp()[:, None].float(), clean_logp, concept_ids)
        k = kl.double().mean(1)
        err = (k / target[i, t] - 1).abs()
        better = err < best_err[i, t]
        bi, bt = i[better], t[better]
        best_err[bi, bt], best_a[bi, bt], best_kl[bi, bt] = err[better], mid[better].exp(), k[better]
        best_lp[bi, bt] = lp[better]
        below = k < target[i, t]
        lo[i[below], t[below]] = mid[below]
        hi[i[~below], t[~below]] = mid[~below]
        todo[i[err <= rtol], t[err <= rtol]] = False
    return Calibration(best_a.float(), best_kl.float(), best_err <= rtol, best_lp, done)


def sample_next(logits: Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator) -> Tensor:
    """One token per row of ``logits [rows, vocab]``: temperature, then top-k, then nucleus."""
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix with mass >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))
    return torch.multinomial(logits.softmax(-1).cpu(), 1, generator=gen).squeeze(1)


def generate(fw: SteeredForwards, prompts: Prompts, deltas: Tensor, n_new: int, n_samples: int,
             temperature: float, top_k: int, top_p: float, seed: int,
             progress: bool = False) -> tuple[Tensor, Tensor]:
    """One greedy and ``n_samples`` sampled continuations per (delta, prompt), steered at
    every step, then scored by the clean model.

    Returns ``tokens [n_deltas, n_prompts, 1 + n_samples, n_new]`` (index 0 greedy) and
    the clean model's mean negative log-likelihood per continuation ``[n, P, S]``.
    Rows are right-padded; a causal model never sees the padding after a row's end, so
    each row reads its logits at its own last position.
    """
    n, P, S = len(deltas), len(prompts.texts), 1 + n_samples
    width = prompts.tokens.shape[1] + n_new
    gen = torch.Generator().manual_seed(seed)
    # Rows sorted by prompt length, so that a forward's rows mostly share one width.
    rows = torch.arange(n * P * S)
    rows = rows[torch.sort(prompts.lengths[(rows // S) % P], stable=True).indices]
    out = torch.zeros(n * P * S, n_new, dtype=torch.long)
    nll = torch.zeros(n * P * S)
    chunks = range(0, len(rows), fw.max_rows)
    if progress:
        chunks = tqdm(chunks, desc="generate", unit="chunk")
    for lo in chunks:
        r = rows[lo:lo + fw.max_rows]
        v, p, s = r // (P * S), (r // S) % P, r % S
        buf = torch.full((len(r), width), prompts.pad, dtype=torch.long)
        buf[:, :prompts.tokens.shape[1]] = prompts.tokens[p]
        start = prompts.lengths[p].clone()
        greedy = s == 0
        for step in range(n_new):
            pos = start + step
            logits = fw.logits(buf[:, :int(pos.max())], deltas[v])
            last = logits[torch.arange(len(r), device=logits.device), (pos - 1).to(logits.device)]
            nxt = last.argmax(-1).cpu()
            if not greedy.all():
                nxt[~greedy] = sample_next(last[(~greedy).to(last.device)], temperature, top_k, top_p, gen)
            buf[torch.arange(len(r)), pos] = nxt
            out[r, step] = nxt
        logits = fw.logits(buf[:, :int(start.max()) + n_new - 1], None)
        at = (start[:, None] - 1 + torch.arange(n_new)).to(logits.device)  # positions predicting new tokens
        picked = logits[torch.arange(len(r), device=logits.device)[:, None], at].flatten(0, 1).float()
        nll[r] = torch.nn.functional.cross_entropy(picked, out[r].flatten().to(picked.device),
                                                   reduction="none").view(len(r), n_new).mean(1).cpu()
    return out.view(n, P, S, n_new), nll.view(n, P, S)


def repetition_rate(tokens: Tensor, n: int) -> Tensor:
    """Share of each sequence's token n-grams that repeat an earlier one, ``[..., L] -> [...]``
    (1 − unique/total; 0 when the sequence is shorter than n)."""
    flat = tokens.reshape(-1, tokens.shape[-1]).tolist()
    rates = []
    for seq in flat:
        grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
        rates.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
    return torch.tensor(rates).view(tokens.shape[:-1])
