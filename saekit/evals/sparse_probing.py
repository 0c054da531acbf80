"""Sparse probing (Gurnee et al. 2023; SAEBench's ``sparse_probing``): can k of a
dictionary's features do what a probe on all of the model's activations does?

For each labelled concept, one-vs-rest:

1. **Examples.** Token positions of the text, labelled by ``task``
   (:mod:`saekit.evals.concept_tasks`): the planted concept the token carries (the
   demo LM's seven families, or their groups such as weekday vs weekend, ``level``),
   a word's first letter, or the text source. Positives are the concept's
   positions, negatives those of every other concept, subsampled to equal numbers (at
   most ``max_per_class`` each) and split into train and test (``test_fraction``).
2. **Dense probe**: L2-regularised logistic regression on the standardised activations
   at ``hook`` (all ``d_in`` dimensions): the accuracy a linear read-out of the model
   reaches.
3. **k-sparse probes**, for each dictionary and each ``k`` of ``k_values``: the k
   features with the largest difference of mean code between positives and negatives
   on the training split (SAEBench's selection), then a logistic regression on those k
   codes alone.

Reported: test accuracy per dictionary, concept and k, the dense probe's, and their
means over concepts. A dictionary whose features are the concepts reaches the dense
accuracy at small k; a random one does not.

Departures from SAEBench, and why: SAEBench probes whole texts (activations mean-pooled
over each text) on labelled datasets (Amazon reviews, Europarl, GitHub code, ...) that
cannot be downloaded here; the demo LM's planted concepts label single tokens, so saekit
probes token positions. SAEBench fits the dense probe by Adam and the sparse ones with
sklearn; saekit fits both by L-BFGS on the same objective (mean logistic loss + λ‖w‖²,
λ = ``l2``), which needs no extra dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from saekit.activations.harvest import harvest
from saekit.data import token_mask
from saekit.dictionaries import REGISTRY, DictionaryConfig
from saekit.evals.common import EvalConfig, EvalResult, encode_rows, load_dictionaries, settings
from saekit.evals.concept_tasks import task_tokens
from saekit.models import load_model


@dataclass
class ConceptProbes(EvalConfig):
    """What probing the planted concepts needs: the concepts, their splits and the probes
    (shared by sparse probing and :mod:`saekit.evals.tpp`)."""

    hook: str = "blocks.2.mlp.hook_post"
    """Hook whose activations are probed; every dictionary must be fitted on it."""
    dictionaries: list[str] | None = field(default_factory=lambda: ["checkpoints/demo-topk",
                                                                     "checkpoints/demo-snmf"])
    n_tokens: int = 65536
    task: Literal["planted", "first_letter", "source"] = "planted"
    """What labels the tokens (:mod:`saekit.evals.concept_tasks`): the demo LM's planted
    concepts, a word's first letter (real text, Chanin et al.'s absorption task), or the
    text source a token comes from (``sources``)."""
    level: Literal["family", "group"] = "family"
    """Planted concepts to probe: ``family`` (days, months, ...) or ``group`` (weekday, weekend, ...)."""
    sources: list[str] = field(default_factory=lambda: ["english", "demo"])
    """Task ``source``: the text sources, one concept each (default: English prose against
    the Python documentation of the demo corpus)."""
    max_per_class: int = 2000
    """Positive (and as many negative) positions per concept, at most."""
    min_per_class: int = 20
    """Concepts with fewer positive positions in the text are skipped (and named)."""
    test_fraction: float = 0.25
    l2: float = 1e-3
    """Weight of the probes' L2 penalty (on standardised inputs)."""


@dataclass
class Config(ConceptProbes):
    """Sparse probing settings (the common fields: :class:`~saekit.evals.common.EvalConfig`)."""

    k_values: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    """Numbers of features each sparse probe may use."""
    random_control: bool = True
    """Also probe ``random``: a TopK SAE with random unit directions, as many features and
    the same k as the first dictionary (1024 and 32 without one), b_dec the data's mean:
    what k features give with no learning."""


def concept_data(cfg: ConceptProbes, model: Any, progress: bool = False,
                 also: tuple[str, ...] = ()) -> tuple[Tensor, Tensor, list[str], dict[str, Tensor]]:
    """``(activations [n, d_in] at cfg.hook, concept label per row (-1: none), concept
    names, {hook: activations}`` of the ``also`` hooks on the same rows) on ``cfg.n_tokens``
    tokens of ``cfg.task``'s text (document starts left out), from one forward pass."""
    if cfg.level not in ("family", "group"):
        raise ValueError(f"Config.level must be 'family' or 'group', got {cfg.level!r}")
    if not 0 < cfg.test_fraction < 1:
        raise ValueError(f"Config.test_fraction must be in (0, 1), got {cfg.test_fraction}")
    tokens, labels, names = task_tokens(cfg, model)
    mask = token_mask(tokens, model)  # the rows harvest returns: document starts and padding left out
    hooks = list(dict.fromkeys([cfg.hook, *also]))
    acts = {h: a.float() for h, a in harvest(model, hooks, tokens, cfg.batch_size, mask=mask,
                                              progress=progress).items()}
    return acts[cfg.hook], labels[mask], names, {h: acts[h] for h in also}


def fit_probe(x: Tensor, y: Tensor, l2: float = 1e-3, iters: int = 100) -> tuple[Tensor, Tensor, Tensor]:
    """Logistic regression by L-BFGS on standardised ``x [n, d]``, labels ``y`` in {0, 1}.

    Returns ``(mean, std, weights [d + 1])``; :func:`predict` applies them."""
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.zeros(z.shape[1], dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=iters, line_search_fn="strong_wolfe")
    target = y.double()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w, target) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mean, std, w.detach()


def predict(x: Tensor, probe: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Boolean predictions of a probe from :func:`fit_probe`."""
    mean, std, w = probe
    return ((x.double() - mean) / std) @ w[:-1] + w[-1] > 0


def top_mean_difference(codes: Tensor, y: Tensor, k: int) -> Tensor:
    """Indices of the k features whose mean code is most above on positives than on
    negatives (SAEBench's selection)."""
    diff = codes[y].float().mean(0) - codes[~y].float().mean(0)
    return diff.topk(min(k, len(diff))).indices


def random_topk(x: Tensor, like: Any = None, seed: int = 0) -> Any:
    """The ``random`` control: a TopK SAE on ``x``'s width with random unit decoder rows,
    ``W_enc = W_decᵀ`` and ``b_dec`` the mean of ``x``; ``d_dict`` and ``k`` those of
    ``like`` (1024 and 32 without it, or when it has no k)."""
    d_dict = like.cfg.d_dict if like is not None else 1024
    k = (like.cfg.k if like is not None and like.cfg.k else 32)
    sae = REGISTRY["topk"](DictionaryConfig(kind="topk", d_in=x.shape[1], d_dict=d_dict, k=min(k, d_dict)))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    return sae


def concept_splits(labels: Tensor, n_concepts: int, cfg: ConceptProbes) -> tuple[list[tuple[int, Tensor, Tensor, Tensor, Tensor]], list[int]]:
    """``([(concept, train idx, train y, test idx, test y)], skipped concepts)``: balanced
    one-vs-rest examples among labelled positions, seeded by ``cfg.seed``."""
    g = torch.Generator().manual_seed(cfg.seed)
    labelled = (labels >= 0).nonzero().squeeze(1)
    out, skipped = [], []
    for c in range(n_concepts):
        pos = labelled[labels[labelled] == c]
        neg = labelled[labels[labelled] != c]
        n = min(len(pos), len(neg), cfg.max_per_class)
        if n < cfg.min_per_class:
            skipped.append(c)
            continue
        pos = pos[torch.randperm(len(pos), generator=g)[:n]]
        neg = neg[torch.randperm(len(neg), generator=g)[:n]]
        n_test = max(1, int(round(cfg.test_fraction * n)))
        train = torch.cat([pos[n_test:], neg[n_test:]])
        test = torch.cat([pos[:n_test], neg[:n_test]])
        y_train = torch.cat([torch.ones(n - n_test), torch.zeros(n - n_test)]).bool()
        y_test = torch.cat([torch.ones(n_test), torch.zeros(n_test)]).bool()
        out.append((c, train, y_train, test, y_test))
    return out, skipped


class Prepared(NamedTuple):
    """What the concept evaluators start from (:func:`prepare`): one harvest and one
    encoding per dictionary, shared by sparse probing, TPP and absorption."""

    model: Any
    """The loaded model."""
    dictionaries: list[tuple[str, Any]]
    """``(name, dictionary)`` pairs, checked against ``cfg.hook``."""
    acts: Tensor
    """Activations ``[n, d_in]`` at ``cfg.hook`` of the labelled positions some split uses."""
    codes: dict[str, Tensor]
    """Each dictionary's codes of ``acts`` (on the CPU), by name."""
    names: list[str]
    """Concept names, indexed by label."""
    splits: list[tuple[int, Tensor, Tensor, Tensor, Tensor]]
    """Per concept: ``(label, train rows, train labels, test rows, test labels)``, rows
    indexing ``acts``."""
    skipped: list[str]
    """Concepts with too few labelled positions."""
    written: dict[str, Tensor] = {}
    """Activations on the same rows at the output hooks of the transcoders among the
    dictionaries (by hook name): where their decoder rows live."""

    def at_output(self, dictionary: Any) -> Tensor:
        """The activations where ``dictionary`` writes: its output hook's for a transcoder,
        ``acts`` for a dictionary that reconstructs its input."""
        out = getattr(dictionary.cfg, "output_hook", None)
        return self.written[out] if getattr(dictionary.cfg, "is_transcoder", False) else self.acts


def prepare(cfg: ConceptProbes, model: Any = None, progress: bool = False) -> Prepared:
    """Load the model (unless given) and dictionaries, harvest and label the activations
    once, split each concept, keep the rows the splits use and encode them once per
    dictionary. No usable concept is an error."""
    if model is None:
        model = load_model(cfg.model, device=cfg.device)
    dicts = load_dictionaries(cfg.dictionaries, model, cfg.hook, transcoders="reads")
    outputs = tuple(dict.fromkeys(d.cfg.output_hook for _, d in dicts if d.cfg.is_transcoder))
    acts, labels, names, written = concept_data(cfg, model, progress, also=outputs)
    splits, skipped = concept_splits(labels, len(names), cfg)
    if not splits:
        raise ValueError(f"no concept has {cfg.min_per_class} labelled positions in {cfg.n_tokens} tokens of "
                         f"{cfg.data!r}; the planted concepts are the demo corpus's (use data 'demo' or more tokens)")
    used = torch.unique(torch.cat([torch.cat([s[1], s[3]]) for s in splits]))
    where = torch.full((len(acts),), -1, dtype=torch.long)
    where[used] = torch.arange(len(used))
    x = acts[used]
    codes = {name: encode_rows(d, x.to(d.W_dec.device)).float().cpu() for name, d in dicts}
    splits = [(c, where[tr], y, where[te], y_te) for c, tr, y, te, y_te in splits]
    return Prepared(model, dicts, x, codes, names, splits, [names[c] for c in skipped],
                    {h: a[used] for h, a in written.items()})


def run(cfg: Config, model: Any = None, progress: bool = False, prepared: Prepared | None = None) -> EvalResult:
    """Dense and k-sparse probes for every planted concept (module docstring);
    ``prepared`` (:func:`prepare`) reuses another evaluator's harvest and codes.

    Returns
    -------
    EvalResult named ``sparse_probing``: one row per (probe, concept, k) with
    ``accuracy`` and the numbers of train and test examples; the summary holds the mean
    accuracy over concepts of the dense probe (``dense``) and of each dictionary at each
    k (``NAME@k``), and the concepts skipped for too few examples.
    """
    if not cfg.k_values or any(k < 1 for k in cfg.k_values):
        raise ValueError(f"Config.k_values must be positive integers, got {cfg.k_values!r}")
    _, dicts, x, codes, names, splits, skipped, _ = prepared or prepare(cfg, model, progress)
    codes = dict(codes)
    if cfg.random_control:
        codes["random"] = encode_rows(random_topk(x, dicts[0][1] if dicts else None, cfg.seed), x)
    rows: list[dict[str, Any]] = []
    for c, tr, y_train, te, y_test in splits:
        common = {"concept": names[c], "n_train": len(tr), "n_test": len(te)}
        probe = fit_probe(x[tr], y_train, cfg.l2)
        rows.append({"probe": "dense", **common, "k": x.shape[1],
                     "accuracy": (predict(x[te], probe) == y_test).double().mean().item()})
        for name, z in codes.items():
            for k in cfg.k_values:
                feats = top_mean_difference(z[tr], y_train, k)
                probe = fit_probe(z[tr][:, feats], y_train, cfg.l2)
                rows.append({"probe": name, **common, "k": k, "features": feats.tolist(),
                             "accuracy": (predict(z[te][:, feats], probe) == y_test).double().mean().item()})
    summary: dict[str, Any] = {"concepts": len(splits), "skipped": skipped}
    for probe in ["dense", *codes]:
        for k in ([None] if probe == "dense" else cfg.k_values):
            acc = [r["accuracy"] for r in rows if r["probe"] == probe and (k is None or r["k"] == k)]
            summary["dense" if k is None else f"{probe}@{k}"] = sum(acc) / len(acc)
    return EvalResult("sparse_probing", rows, summary, settings(cfg))
