"""Scorers: how well a description predicts where a feature fires, on held-out text.

Every score is computed on a :class:`ScoringCorpus`, built from windows disjoint from
those the descriptions came from, and every score comes with a random-description
baseline (the description of another feature, scored on this feature's data).

- :func:`cosy`: CoSy's statistics (Kopf et al. 2024) for concept vs control activations:
  AUC = P(concept > control) (ties count 1/2), MAD = (mean₁ − mean₀)/std₀, Mann–Whitney U
  and its one-sided p. CoSy sets MAD to 0 when std₀ = 0; here it is NaN (undefined),
  since a sparse feature silent on every control text would otherwise score 0 exactly
  when it separates best.
- :func:`retrieval_cosy`: offline CoSy: the concept set is the ``n_concept`` held-out
  chunks whose MiniLM embedding is nearest the description's, the control set a fixed
  random sample of chunks; the activation of a chunk is the feature's **max over its
  non-pad tokens** (PRISM's mean over 512 padded positions washes sparse features out).
  No generator, so no generator variance.
- :func:`llm_cosy`: CoSy on texts an LLM writes from the description (PRISM's
  CoSy-for-text), against the same control chunks; texts are cut to the chunk length so
  max-pooling compares like with like.
- :func:`embedding_auroc`: delphi's embedding scorer: AUROC of cos(description, chunk)
  between activating chunks (decile-stratified) and non-activating ones.
- delphi's simulation scorer (:mod:`saekit.interp.simulation`): the correlation of the
  feature's per-token activations with those an offline simulator predicts from the
  description, on the same activating and non-activating chunks;
  :func:`dictionary_simulation` gives a dictionary's mean in one call.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from saekit.data import get_tokenizer, special_ids, token_mask
from saekit.interp import describe
from saekit.interp.prism import embed
from saekit.interp.prompts import generate_concept_texts
from saekit.interp.simulation import corpus_simulation
from saekit.interp.store import TextExample, collect, token_strings, window_codes
from saekit.metrics.uncertainty import mean_se, paired_difference

_EMBEDDINGS: dict[str, Tensor] = {}


class CosyScore(NamedTuple):
    """CoSy statistics of one description."""

    auc: float
    """P(concept activation > control activation), ties counted 1/2."""
    mad: float
    """(mean concept − mean control) / std control (n−1); NaN when std control is 0."""
    u: float
    """Mann–Whitney U of the concept sample."""
    p: float
    """One-sided Mann–Whitney p (concept > control)."""


def cosy(concept: Sequence[float] | Tensor, control: Sequence[float] | Tensor) -> CosyScore:
    """CoSy's AUC, MAD, U and p; see the module docstring."""
    from scipy.stats import mannwhitneyu

    a1 = np.asarray(concept, dtype=np.float64)
    a0 = np.asarray(control, dtype=np.float64)
    if len(a1) == 0 or len(a0) < 2:
        raise ValueError(f"cosy needs >= 1 concept and >= 2 control activations, got {len(a1)} and {len(a0)}")
    if np.all(a1 == a1[0]) and np.all(a0 == a1[0]):
        return CosyScore(0.5, math.nan, 0.5 * len(a1) * len(a0), 1.0)
    u, p = mannwhitneyu(a1, a0, alternative="greater")
    sd = a0.std(ddof=1)
    mad = (a1.mean() - a0.mean()) / sd if sd > 0 else math.nan
    return CosyScore(float(u) / (len(a1) * len(a0)), float(mad), float(u), float(p))


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """AUROC of scores, positives against negatives (NaN when either is empty)."""
    if len(positive) == 0 or len(negative) == 0:
        return math.nan
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(y, np.r_[np.asarray(positive, float), np.asarray(negative, float)]))


class ScoringCorpus:
    """Held-out text cut into chunks, with the features' activations on every token.

    Built by :func:`scoring_corpus`. ``acts[n, f]`` is feature row ``f``'s max over chunk
    ``n``; ``token_acts[n, t, f]`` its activation on each token; ``texts[n]`` the chunk's
    text with masked tokens (BOS, separators, padding) left out.
    """

    def __init__(self, tokens: Tensor, keep: Tensor, token_acts: Tensor, features: list[int],
                 vocab: Sequence[str], seed: int = 0, n_control: int = 1000):
        self.tokens, self.keep, self.token_acts = tokens, keep, token_acts
        self.acts = token_acts.float().amax(dim=1)
        self.features = features
        self._row = {f: i for i, f in enumerate(features)}
        self.vocab = vocab
        self.texts = ["".join(vocab[int(t)] for t, k in zip(row, m, strict=True) if k)
                      for row, m in zip(tokens, keep, strict=True)]
        gen = torch.Generator().manual_seed(seed)
        self.control = torch.randperm(len(tokens), generator=gen)[:n_control]
        self.seed = seed
        self._emb: Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def row(self, feature: int) -> int:
        return self._row[feature]

    @property
    def embeddings(self) -> Tensor:
        """MiniLM embeddings of the chunk texts (computed once per process for the same
        texts: two dictionaries scored on one corpus share them)."""
        if self._emb is None:
            key = hashlib.sha256("\x00".join(self.texts).encode()).hexdigest()
            if key not in _EMBEDDINGS:
                _EMBEDDINGS.clear()  # keep one corpus, not a growing pile
                _EMBEDDINGS[key] = embed(self.texts)
            self._emb = _EMBEDDINGS[key]
        return self._emb

    def example(self, n: int, feature: int) -> TextExample:
        """Chunk ``n`` as a :class:`TextExample` of one feature (masked tokens left out)."""
        keep = self.keep[n]
        toks = [self.vocab[int(t)] for t in self.tokens[n][keep]]
        acts = self.token_acts[n, :, self.row(feature)][keep].float().tolist()
        return TextExample(toks, acts, max(acts, default=0.0))

    def split(self, feature: int, n: int = 50) -> tuple[list[int], list[int]]:
        """``(activating, non_activating)`` chunk indices for one feature: ``n`` activating
        chunks spread evenly over its activation range (delphi's deciles), and ``n``
        random silent ones."""
        a = self.acts[:, self.row(feature)]
        on = (a > 0).nonzero().squeeze(1)
        on = on[a[on].argsort(descending=True)]
        pick = on[np.linspace(0, len(on) - 1, min(n, len(on))).round().astype(int)] if len(on) else on
        off = (a == 0).nonzero().squeeze(1)
        gen = torch.Generator().manual_seed(self.seed + feature)
        off = off[torch.randperm(len(off), generator=gen)[:n]]
        return pick.tolist(), off.tolist()


def scoring_corpus(model: Any, dictionary: Any, tokens: Tensor, features: Sequence[int], vocab: Sequence[str],
                   chunk: int = 32, batch_size: int = 32, seed: int = 0, n_control: int = 1000,
                   progress: bool = False) -> ScoringCorpus:
    """Run ``tokens [n_windows, ctx_len]`` once and cut every window after its BOS into
    chunks of ``chunk`` tokens (the model still sees the whole window)."""
    mask = token_mask(tokens, model)
    T = tokens.shape[1]
    n_chunks = (T - 1) // chunk
    if n_chunks < 1:
        raise ValueError(f"windows of {T} tokens are shorter than one chunk of {chunk} tokens after BOS")
    span = slice(1, 1 + n_chunks * chunk)
    parts = []
    for _, dense in window_codes(model, dictionary, tokens, features=features, batch_size=batch_size,
                                 mask=mask, progress=progress):
        parts.append(dense[:, span].reshape(-1, chunk, dense.shape[2]).half())
    token_acts = torch.cat(parts)
    toks = tokens[:, span].reshape(-1, chunk)
    keep = mask[:, span].reshape(-1, chunk)
    return ScoringCorpus(toks, keep, token_acts, list(features), vocab, seed, n_control)


def _embedded(descriptions: Sequence[str] | Tensor) -> Tensor:
    return descriptions if isinstance(descriptions, Tensor) else embed(list(descriptions))


def retrieval_cosy(corpus: ScoringCorpus, feature: int, descriptions: Sequence[str] | Tensor,
                   n_concept: int = 50) -> list[CosyScore]:
    """Offline CoSy of each description (text, or its :func:`~saekit.interp.prism.embed`
    embedding) for one feature; see the module docstring."""
    sims = _embedded(descriptions) @ corpus.embeddings.T
    acts = corpus.acts[:, corpus.row(feature)]
    control = acts[corpus.control]
    return [cosy(acts[s.topk(min(n_concept, len(s))).indices], control) for s in sims]


def embedding_auroc(corpus: ScoringCorpus, feature: int, descriptions: Sequence[str] | Tensor,
                    n: int = 50) -> list[float]:
    """delphi's embedding score of each description (text or embedding) for one feature."""
    on, off = corpus.split(feature, n)
    e = _embedded(descriptions)
    emb = corpus.embeddings
    return [auroc((emb[on] @ d).tolist(), (emb[off] @ d).tolist()) for d in e]


def text_acts(model: Any, dictionary: Any, texts: Sequence[str], features: Sequence[int],
              max_len: int = 32) -> Tensor:
    """Each feature's max over each text's first ``max_len`` tokens, ``[n_texts, n_features]``
    (BOS first, padding masked)."""
    tok = get_tokenizer(model)
    bos, pad = special_ids(model)
    rows = torch.full((len(texts), max_len + 1), pad, dtype=torch.long)
    rows[:, 0] = bos
    for i, t in enumerate(texts):
        ids = tok(t, add_special_tokens=False)["input_ids"][:max_len]
        rows[i, 1:1 + len(ids)] = torch.tensor(ids, dtype=torch.long)
    return torch.cat([d.amax(dim=1) for _, d in window_codes(model, dictionary, rows, features=features)])


def llm_cosy(client: Any, model: Any, dictionary: Any, corpus: ScoringCorpus, features: Sequence[int],
             descriptions: Sequence[str], n_texts: int = 10, *, max_tokens: int = 3000, retries: int = 2,
             salvage: bool = False, on_error: str = "raise", log: Any = None) -> list[CosyScore]:
    """CoSy on LLM-written texts: ``descriptions[i]`` describes ``features[i]``.

    ``on_error="skip"``: a description the LLM wrote no usable texts for scores NaN
    (not a pass, not a fail) instead of raising; ``log`` counts the answers under
    ``"cosy_texts"`` (:func:`~saekit.interp.prompts.generate_concept_texts`, which
    ``max_tokens``, ``retries`` and ``salvage`` are passed to)."""
    texts = generate_concept_texts(client, list(descriptions), n=n_texts, retries=retries, max_tokens=max_tokens,
                                   salvage=salvage, on_error=on_error, log=log)
    flat = [t for ts in texts if ts is not None for t in ts]
    uniq = sorted(set(features))
    acts = text_acts(model, dictionary, flat, uniq, max_len=corpus.tokens.shape[1]) if flat else None
    out, at = [], 0
    for f, ts in zip(features, texts, strict=True):
        if ts is None:
            out.append(CosyScore(math.nan, math.nan, math.nan, math.nan))
            continue
        col = uniq.index(f)
        concept, at = acts[at:at + len(ts), col], at + len(ts)
        out.append(cosy(concept, corpus.acts[corpus.control, corpus.row(f)]))
    return out


def random_partners(features: Sequence[int], seed: int = 0) -> dict[int, int]:
    """A seeded derangement: each feature's random-description donor (never itself)."""
    f = list(features)
    if len(f) < 2:
        return {}
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(f))
        if not np.any(perm == np.arange(len(f))):
            return {f[i]: f[j] for i, j in enumerate(perm)}


def score_descriptions(corpus: ScoringCorpus, descriptions: dict[int, list[tuple[str, str]]],
                       seed: int = 0, n_concept: int = 50, simulation: bool = True) -> dict[int, list[dict[str, Any]]]:
    """Score every ``(method, text)`` description of every feature, with random baselines.

    Returns ``{feature: [{"method", "text", "scores": {...}}]}`` where scores hold
    ``cosy_auc, cosy_mad, cosy_p, embedding_auroc``, with ``simulation`` (delphi's
    simulation score with the offline simulator: the correlation pooled over all tokens,
    :func:`~saekit.interp.simulation.corpus_simulation`) and ``simulation_per_example``
    (the mean of the examples' own correlations) unless ``simulation=False``, and the same
    of a random description (``random_*``: the same method's description of another
    feature that has one, see :func:`random_partners`, scored on this feature's data).
    """
    # Donors are drawn per method among the features that have a description of it, so
    # every method gets its baseline (PRISM labels exist only for some features).
    methods = sorted({m for rows in descriptions.values() for m, _ in rows})
    donor_of = {m: random_partners([f for f, rows in descriptions.items() if any(r[0] == m for r in rows)], seed)
                for m in methods}
    # One embedding call for every text: the embedder's per-call overhead dominates short texts.
    uniq = sorted({t for rows in descriptions.values() for _, t in rows})
    table = dict(zip(uniq, embed(uniq), strict=True))
    out: dict[int, list[dict[str, Any]]] = {}
    for f, rows in descriptions.items():
        texts = [t for _, t in rows]
        # The i-th description of a method gets the donor's i-th of that method (cycling),
        # so best-of-k over PRISM's k labels has k different random labels beside it.
        seen: dict[str, int] = {}
        rand = []
        for m, _ in rows:
            donor = donor_of[m].get(f)
            pool = [t for m2, t in descriptions[donor] if m2 == m] if donor is not None else []
            i = seen[m] = seen.get(m, -1) + 1
            rand.append(pool[i % len(pool)] if pool else None)
        rand_texts = [t for t in rand if t is not None]
        allt = torch.stack([table[t] for t in texts + rand_texts])
        cs = retrieval_cosy(corpus, f, allt, n_concept)
        ea = embedding_auroc(corpus, f, allt)
        sim = corpus_simulation(corpus, f, texts + rand_texts) if simulation else None
        res, j = [], len(texts)
        for i, (m, t) in enumerate(rows):
            s = {"cosy_auc": cs[i].auc, "cosy_mad": cs[i].mad, "cosy_p": cs[i].p, "embedding_auroc": ea[i]}
            if sim is not None:
                s.update({"simulation": sim[i].correlation, "simulation_per_example": sim[i].example_mean})
            if rand[i] is not None:
                s.update({"random_cosy_auc": cs[j].auc, "random_cosy_mad": cs[j].mad,
                          "random_cosy_p": cs[j].p, "random_embedding_auroc": ea[j]})
                if sim is not None:
                    s.update({"random_simulation": sim[j].correlation,
                              "random_simulation_per_example": sim[j].example_mean})
                j += 1
            res.append({"method": m, "text": t, "scores": s})
        out[f] = res
    return out


def dictionary_simulation(model: Any, dictionary: Any, tokens: Tensor, n_features: int = 64,
                          seed: int = 0, batch_size: int = 32) -> dict[str, Any]:
    """A dictionary's offline simulation score in one call (for a one-row summary such as
    ``saekit eval suite``), as ``saekit interp`` computes it at its defaults.

    The first three quarters of ``tokens`` (windows ``[n, ctx_len]``) describe; the
    ``n_features`` features firing most there are described offline
    (:func:`saekit.interp.describe.describe`) and simulated on the last quarter
    (:func:`~saekit.interp.simulation.corpus_simulation`), each beside another feature's
    description (:func:`random_partners`).

    Returns
    -------
    dict
        ``simulation`` and ``random_simulation`` (means over features of the pooled
        correlation), their standard errors over features (``*_se``), ``n_features``
        (features with a score), the paired ``difference`` of real and random and its
        bootstrap 95% interval ``ci95``
        (:func:`~saekit.metrics.uncertainty.paired_difference`), and ``rows``: per feature ``{"feature", "description",
        "simulation", "simulation_per_example", "random_simulation"}``.
    """
    if len(tokens) < 2:
        raise ValueError(f"dictionary_simulation needs >= 2 windows of tokens (to describe and to score on), "
                         f"got {len(tokens)}")
    cut = max(1, 3 * len(tokens) // 4)
    store = collect(model, dictionary, tokens[:cut], top_k=100, n_samples=100, batch_size=batch_size, seed=seed,
                    progress=False)
    count = store.count()
    feats = [store.features[i] for i in count.argsort(descending=True, stable=True)[:n_features].tolist()
             if count[i] > 0]
    vocab = token_strings(model)
    text = {f: r["text"] for f, r in describe.describe(store, vocab, feats, model=model,
                                                      dictionary=dictionary).items()}
    corpus = scoring_corpus(model, dictionary, tokens[cut:], feats, vocab, batch_size=batch_size, seed=seed)
    donors = random_partners(feats, seed)
    rows = []
    for f in feats:
        real, *rand = corpus_simulation(corpus, f, [text[f]] + ([text[donors[f]]] if f in donors else []))
        rows.append({"feature": f, "description": text[f], "simulation": real.correlation,
                     "simulation_per_example": real.example_mean,
                     "random_simulation": rand[0].correlation if rand else math.nan})
    out: dict[str, Any] = {}
    for key in ("simulation", "random_simulation"):
        vals = [r[key] for r in rows if not math.isnan(r[key])]
        out[key] = float(np.mean(vals)) if vals else math.nan
        out[f"{key}_se"] = mean_se(vals)
    out["n_features"] = sum(not math.isnan(r["simulation"]) for r in rows)
    paired = paired_difference(rows, "simulation", seed=seed)
    out["difference"], out["ci95"] = paired.get("difference", math.nan), paired.get("ci95")
    return {**out, "rows": rows}
