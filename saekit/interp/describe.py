"""Offline describers: deterministic descriptions from a :class:`FeatureStore`, no LLM.

- :func:`top_tokens`: the tokens a feature fires on, ranked by conditional mean
  activation x log lift (Bills et al.'s token-lookup baseline, with the lift so that
  frequent tokens do not win by frequency alone);
- :func:`ngrams`: the preceding-token patterns that lead to its strongest activations;
- :func:`contrastive_keywords`: tokens near its activations that are over-represented
  against the whole corpus, by log-odds with an informative Dirichlet prior (Monroe et
  al. 2008), as z-scores;
- :func:`logit_lens`: the tokens its direction promotes and suppresses through the
  unembedding (``W_U · LN_final(d)``, through ``W_out`` for MLP-hidden dictionaries); this
  needs no activations and describes dead features too;
- :func:`describe`: all four joined in one template,
  ``tokens: X, Y | context: A, B | promotes: P, Q``.

Every function takes ``vocab``, the decoded token strings (:func:`store.token_strings`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from saekit.evals.directions import direction_logits
from saekit.interp.store import FeatureStore


def _clean(token: str) -> str:
    return token.strip() or repr(token)


def top_tokens(store: FeatureStore, feature: int, vocab: Sequence[str], k: int = 10,
               min_count: int = 3) -> list[dict[str, Any]]:
    """Tokens the feature fires on, best first: ``{"token", "mean", "count", "lift"}``.

    ``mean`` is the mean activation on the token when the feature fires there, ``lift``
    how much more often the feature fires on the token than on an average token
    (P(fire | token) / P(fire)). Ranked by ``mean x log(1 + lift)``, tokens seen firing
    fewer than ``min_count`` times dropped (all kept when that leaves none).
    """
    ids, count, total, _ = store.token_stats(feature)
    if len(ids) == 0:
        return []
    occurrences = store.token_counts()[ids].double().clamp(min=1)
    p_fire = max(int(store.count()[store.row(feature)]), 1) / max(store.n_tokens, 1)
    lift = (count.double() / occurrences) / p_fire
    mean = total / count.clamp(min=1)
    score = mean * torch.log1p(lift)
    keep = count >= min_count
    if keep.any():
        ids, count, mean, lift, score = ids[keep], count[keep], mean[keep], lift[keep], score[keep]
    order = score.argsort(descending=True)[:k]
    return [{"token": vocab[int(ids[i])], "mean": float(mean[i]), "count": int(count[i]),
             "lift": float(lift[i])} for i in order]


def ngrams(store: FeatureStore, feature: int, vocab: Sequence[str], k: int = 5, n_examples: int = 50,
           min_count: int = 2) -> list[dict[str, Any]]:
    """Patterns of one or two preceding tokens and the token where the feature fires at
    >= half of the example's maximum, over the top examples: ``{"pattern", "count"}``,
    longest and most frequent first. A pattern is kept when seen ``min_count`` times."""
    counts: Counter[tuple[int, ...]] = Counter()
    for ex in store.examples(feature, n_examples):
        for p, a in enumerate(ex.acts):
            if a <= 0 or a < 0.5 * ex.max:
                continue
            for n in (2, 3):
                if p - n + 1 >= 0:
                    counts[tuple(ex.tokens[p - n + 1:p + 1])] += 1
    ranked = sorted(((c * len(g), c, g) for g, c in counts.items() if c >= min_count), reverse=True)
    out = []
    for _, c, g in ranked:
        # A trigram's bigram suffix with the same count says nothing new.
        if len(g) == 2 and any(len(o) == 3 and o[1:] == g and counts[o] == c for o in counts):
            continue
        out.append({"pattern": "".join(vocab[i] for i in g).strip(), "count": c})
        if len(out) == k:
            break
    return out


def contrastive_keywords(store: FeatureStore, feature: int, vocab: Sequence[str], k: int = 10,
                         radius: int = 8, n_examples: int = 100, prior: float = 100.0) -> list[dict[str, Any]]:
    """Tokens within ``radius`` of the feature's activations (in its top examples, the
    firing tokens themselves excluded) that are over-represented against the corpus.

    Log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008):
    the prior is the corpus distribution scaled to ``prior`` pseudo-counts, and the
    score is the z-score ``delta / sqrt(var)``; ``{"token", "z", "count"}``.
    """
    near: Counter[int] = Counter()
    for ex in store.examples(feature, n_examples):
        fire = [p for p, a in enumerate(ex.acts) if a > 0]
        window = {q for p in fire for q in range(p - radius, p + radius + 1)} - set(fire)
        near.update(ex.tokens[q] for q in window if 0 <= q < len(ex.tokens))
    if not near:
        return []
    corpus = store.token_counts().double()
    ids = torch.tensor(list(near), dtype=torch.long)
    ids = ids[ids < len(corpus)]
    y = torch.tensor([near[int(i)] for i in ids], dtype=torch.float64)
    n1, n2 = float(y.sum()), float(corpus.sum())
    alpha = prior * corpus / n2
    a = alpha[ids].clamp(min=1e-3)
    x = corpus[ids]
    delta = torch.log((y + a) / (n1 + prior - y - a)) - torch.log((x + a) / (n2 + prior - x - a))
    z = delta / torch.sqrt(1 / (y + a) + 1 / (x + a))
    order = z.argsort(descending=True)[:k]
    return [{"token": vocab[int(ids[i])], "z": float(z[i]), "count": int(y[i])} for i in order if z[i] > 0]


def logit_lens(model: Any, dictionary: Any, features: Sequence[int], vocab: Sequence[str], k: int = 20,
               seen: Tensor | None = None) -> list[dict[str, list[dict[str, Any]]]]:
    """Per feature, the ``k`` tokens its direction promotes most and suppresses most:
    ``{"promoted": [{"token", "value"}], "suppressed": [...]}``. ``seen`` (a bool mask
    over the vocabulary, e.g. ``store.token_counts() > 0``) keeps tokens that occur in
    the corpus, which drops the untrained junk rows of large vocabularies."""
    w = dictionary.W_dec.detach()[torch.as_tensor(list(features), dtype=torch.long)]
    # W_dec's rows live at the output hook (a transcoder's; an SAE's own hook).
    logits = direction_logits(model, dictionary.cfg.output_hook, w).float()
    if seen is not None:
        allowed = torch.zeros(logits.shape[1], dtype=torch.bool)
        allowed[:len(seen)] = seen[:logits.shape[1]]
        logits = torch.where(allowed, logits, torch.nan)
    out = []
    for row in logits:
        up = torch.nan_to_num(row, nan=-math.inf).topk(k)
        down = torch.nan_to_num(row, nan=math.inf).topk(k, largest=False)
        out.append({"promoted": [{"token": vocab[int(i)], "value": float(v)} for v, i in zip(*up, strict=True)],
                    "suppressed": [{"token": vocab[int(i)], "value": float(v)}
                                   for v, i in zip(*down, strict=True)]})
    return out


def template(tokens: Sequence[dict], keywords: Sequence[dict], lens: dict | None, n: int = 4) -> str:
    """``tokens: X, Y | context: A, B | promotes: P, Q``, leaving out empty parts."""
    parts = []
    if tokens:
        parts.append("tokens: " + ", ".join(_clean(t["token"]) for t in tokens[:n]))
    if keywords:
        parts.append("context: " + ", ".join(_clean(t["token"]) for t in keywords[:n]))
    if lens:
        parts.append("promotes: " + ", ".join(_clean(t["token"]) for t in lens["promoted"][:n]))
    return " | ".join(parts) or "(never fires)"


def describe(store: FeatureStore, vocab: Sequence[str], features: Sequence[int] | None = None,
             model: Any = None, dictionary: Any = None) -> dict[int, dict[str, Any]]:
    """Every offline describer for each feature: ``{feature: {"top_tokens", "ngrams",
    "keywords", "logit_lens", "text"}}``; the logit lens only when ``model`` and
    ``dictionary`` are given."""
    features = store.features if features is None else list(features)
    lens = (logit_lens(model, dictionary, features, vocab, seen=store.token_counts() > 0)
            if model is not None and dictionary is not None else [None] * len(features))
    out = {}
    for f, lz in zip(features, lens, strict=True):
        toks = top_tokens(store, f, vocab)
        keys = contrastive_keywords(store, f, vocab)
        out[f] = {"top_tokens": toks, "ngrams": ngrams(store, f, vocab), "keywords": keys,
                  "logit_lens": lz, "text": template(toks, keys, lz)}
    return out
