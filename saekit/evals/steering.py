"""Steering: do a dictionary's features move the model toward their concept?

The protocol (``research/evaluators.md`` §E: the SNMF paper's KL-calibrated causal
steering, Arad et al.'s judge-free metrics, AxBench's judge):

1. **Concepts and directions.** A concept is a list of words, each one token with its
   leading space; by default the demo LM's planted families (``saekit.data.CONCEPTS``).
   Per concept the evaluator compares
   - for each dictionary and each ``select_by`` mode, the feature whose firing
     (``active``) has the best F1 against the concept, steered along its unit decoder
     row. ``"input"``: F1 against the tokens that *are* the concept's words (the rule of
     ``saekit.compare``); ``"output"``: against the tokens *followed by* one, i.e. where
     the model is about to write the concept (Arad et al.'s output features);
   - DiffMean for the same modes: the mean activation at those positions minus the mean
     at neutral ones (neither the token nor the next one is any concept's word), unit
     norm;
   - ``n_random`` random unit directions shared by all concepts (isotropic, or Gaussian
     with the activations' covariance), the control.
2. **Intervention.** ``x ← x + α·d`` at ``hook`` at every position but BOS, during the
   prompt and every generated token (the SNMF paper at ``mlp.hook_post``, AxBench at
   every position). With an MLP-hidden hook (``blocks.L.mlp.hook_post``) that is
   neuron space: the residual stream receives ``α·d·W_out``. For a dictionary feature
   it is exactly ``saekit.splice(model, d, error_term=True, edit=codes + α·e_f)``
   (tested), without the cost of encoding every token.
3. **Calibration.** For every direction and target KL, a binary search on ``log α``
   finds the strength at which KL(P_clean ‖ P_steered) of the next token after each
   neutral prompt, averaged over the prompts, is within ``kl_rtol`` of the target (the
   SNMF paper: bisection of α over [1, 2000], 20 iterations, at the last token of "I
   think that"). Deviations: several prompts instead of one (a less noisy KL);
   bisection in ``log α`` over a range in units of the median activation norm, which
   spans decades and so suits any model (``strength_unit = "absolute"`` restores the
   paper's units); a relative tolerance, so small targets are hit as precisely as
   large ones.
4. **Judge-free metrics**, per concept, method and target KL: the change in the
   log-probability of the concept's tokens (log of their total next-token probability
   after the prompts, steered minus clean); the direction's logit-lens tokens (top
   ``lens_k`` of ``W_U · LN_final(d)`` with d mapped into the residual stream: through
   ``W_out`` for MLP-hidden hooks, ``W_O`` for ``attn.hook_z``; LN_final's bias dropped
   because it is the same for every direction); one greedy and ``n_samples`` sampled
   continuations of ``n_new_tokens`` per prompt, with success (a continuation holds a
   concept token), Arad et al.'s success@k (mean number of the direction's top-k
   logit-lens tokens per continuation), the perplexity of the continuations under the
   clean model and their repetition rate (the share of repeated token n-grams).
   Continuations have a fixed length (Arad et al. stop at "."), so perplexity and
   repetition compare like with like.
5. **LLM judge**, only when an OpenAI-compatible endpoint is configured
   (``llm_base_url`` or ``$SAEKIT_LLM_BASE_URL``): AxBench's concept (0–2) and fluency
   (0–2) prompts on prompt + sampled continuation, per sample the harmonic mean (0 if
   either is 0), averaged. AxBench also scores instruction following; the prompts here
   are neutral prefixes, not instructions, so (as in the SNMF paper) the score is the
   harmonic mean of two. An answer without a readable rating is left out and counted
   (``judge_unparsed``), not scored 0 as AxBench does: a formatting slip of the judge is
   no evidence about the text.

On the demo LM (``eval/steering_demo.toml``, one run): at KL 0.05 / 0.25 / 0.5 the
concept's Δ log-prob is 1.00 / 2.25 / 3.16 for the SAE's output feature, 1.49 / 3.25 /
4.46 for the SNMF's, 1.50 / 3.22 / 4.34 for DiffMean and 0.15 / 0.38 / 0.56 for random
directions. Input-selected features reach only 0.19 / 0.44 / 0.66 (SAE) and 0.20 / 0.46 /
0.64 (SNMF), barely above random: the feature that fires on a concept's word is not the
one that writes it (Arad et al.'s input/output distinction). SNMF beats the SAE, as in
the SNMF paper, but only ties DiffMean there (the paper has SNMF ahead, by its judge).

Throughput: every LM forward stacks many directions × strengths × prompts (× samples)
along the batch axis (``max_rows`` rows per forward, each row with its own α·d); the
calibration evaluates every unconverged (direction, target) pair in the same forwards.
Generation recomputes the whole prefix at each step (no KV cache: the native demo LM
has none, and a full forward keeps the per-row hook exact on any model), so it costs
about ``n_new_tokens × (prompt + n_new_tokens / 2)`` token-forwards per continuation;
rows are grouped by prompt length so that a forward wastes little on padding. Sampling
is seeded (``seed``): a run is reproducible, but a sample's random draw depends on the
batch it falls in, so changing the set of directions changes the samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from saekit.activations.harvest import harvest
from saekit.data import get_tokenizer, load_tokens, token_mask
from saekit.evals.common import EvalConfig, EvalResult, input_hooks, load_dictionaries
from saekit.evals.directions import (
    RANDOM_KINDS,
    SELECT_MODES,
    DirectionSelector,
    concept_positions,
    concept_vocabulary,
    logit_lens,
    planted_concepts,
)
from saekit.evals.interventions import (
    Calibration,
    Prompts,
    SteeredForwards,
    calibrate,
    generate,
    repetition_rate,
    tokenize_prompts,
)
from saekit.evals.judge import JudgeScore, judge
from saekit.interp.llm import client_from_config
from saekit.metrics.uncertainty import mean_se
from saekit.models import hook_width, load_model, model_name
from saekit.report import figure_png

STRENGTH_UNITS = ("median_norm", "absolute")

DEMO_PROMPTS = ["The", "Then", "I think that", "Findings show that", "In the end,", "It is", "We",
                "After that,", "She said that", "This"]

@dataclass
class Config(EvalConfig):
    """Settings of the steering evaluator; the defaults are the demo LM's."""

    hook: str = "blocks.2.mlp.hook_post"
    """Where directions are added; every dictionary must be fitted on it. An MLP-hidden
    hook steers in neuron space."""
    dictionaries: list[str] | None = field(
        default_factory=lambda: ["checkpoints/demo-topk", "checkpoints/demo-snmf"])
    """Dictionaries whose best feature per concept is steered (paths or registry ids);
    empty or None compares DiffMean and random directions only."""
    concepts: dict[str, list[str]] | None = None
    """Concept name -> words (each one token with a leading space; others are skipped
    with a warning). None: the demo corpus's planted families."""
    concept_descriptions: dict[str, str] | None = None
    """Concept name -> the description the LLM judge sees (default: the name and some
    of its words)."""
    select_by: list[str] = field(default_factory=lambda: list(SELECT_MODES))
    """How a concept's feature and DiffMean are chosen: "output" (positions followed by
    a concept word) and/or "input" (positions that are one)."""
    n_random: int = 4
    """Random control directions, shared by every concept."""
    random_kind: str = "isotropic"
    """"isotropic" (uniform on the sphere of the hook space) or "covariance" (Gaussian
    with the activations' covariance)."""
    prompts: list[str] = field(default_factory=lambda: list(DEMO_PROMPTS))
    """Neutral prefixes: the KL is calibrated on their next token and continuations start
    from them (BOS is prepended)."""
    target_kls: list[float] = field(default_factory=lambda: [0.05, 0.25, 0.5])
    """KL(P_clean ‖ P_steered) targets, nats (research/evaluators.md §E4 defaults)."""
    signs: list[int] = field(default_factory=lambda: [1])
    """Steer along +d and/or -d (the SNMF paper uses both)."""
    strength_range: list[float] = field(default_factory=lambda: [1e-3, 1e2])
    """[low, high] bracket of the binary search on α, in ``strength_unit``."""
    strength_unit: str = "median_norm"
    """"median_norm" (multiples of the median activation norm at the hook) or "absolute"."""
    search_steps: int = 20
    """Most bisection steps per (direction, target)."""
    kl_rtol: float = 0.05
    """A strength is calibrated once |KL / target − 1| <= kl_rtol."""
    n_new_tokens: int = 20
    """Tokens generated per continuation."""
    n_samples: int = 3
    """Sampled continuations per prompt (besides the greedy one); success@k uses k = n_samples."""
    temperature: float = 0.7
    """Sampling temperature (Arad et al.: 0.7)."""
    top_k: int = 0
    """Sample among the top-k tokens only (0: off; the SNMF paper: 30)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off; the SNMF paper: 0.3)."""
    lens_k: int = 20
    """Logit-lens tokens per direction (Arad et al.'s T_k, k = 20)."""
    repetition_n: int = 3
    """n of the repeated n-grams in the repetition rate."""
    max_rows: int = 256
    """Sequences per LM forward (directions × strengths × prompts × samples stacked)."""
    judge: bool = True
    """Run the LLM judge when an endpoint is configured; False never calls one."""
    llm_base_url: str | None = None
    """OpenAI-compatible server for the judge (default: $SAEKIT_LLM_BASE_URL; none: no judge)."""
    llm_model: str | None = None
    """Judge model name (default: $SAEKIT_LLM_MODEL)."""
    llm_api_key: str | None = None
    """API key (default: $SAEKIT_LLM_API_KEY); never saved with the results."""
    llm_max_concurrency: int = 4
    """Judge requests in flight at once."""
    llm_cache_dir: str | None = None
    """Judge answer cache (default: $SAEKIT_LLM_CACHE_DIR, else ~/.cache/saekit/llm; "off")."""
    llm_max_tokens: int = 512
    """Most tokens per judge answer (an explanation, then the rating)."""


# --------------------------------------------------------------------------- run


def validate(cfg: Config) -> None:
    """Check the config's fields; a ValueError names the field and what was expected."""

    def bad(name: str, expected: str) -> ValueError:
        return ValueError(f"steering config field {name!r}: expected {expected}, got {getattr(cfg, name)!r}")

    if not cfg.target_kls or not all(isinstance(t, (int, float)) and t > 0 for t in cfg.target_kls):
        raise bad("target_kls", "a non-empty list of positive KL values (nats)")
    if not cfg.signs or not set(cfg.signs) <= {1, -1}:
        raise bad("signs", "a non-empty list of 1 and/or -1")
    if not cfg.select_by or not set(cfg.select_by) <= set(SELECT_MODES):
        raise bad("select_by", f"a non-empty list of {SELECT_MODES}")
    if not isinstance(cfg.n_random, int) or cfg.n_random < 0:
        raise bad("n_random", "a non-negative integer")
    if cfg.random_kind not in RANDOM_KINDS:
        raise bad("random_kind", f"one of {RANDOM_KINDS}")
    if not cfg.prompts or not all(isinstance(p, str) and p.strip() for p in cfg.prompts):
        raise bad("prompts", "a non-empty list of non-empty strings")
    r = cfg.strength_range
    if not (isinstance(r, (list, tuple)) and len(r) == 2 and 0 < r[0] < r[1]):
        raise bad("strength_range", "[low, high] with 0 < low < high")
    if cfg.strength_unit not in STRENGTH_UNITS:
        raise bad("strength_unit", f"one of {STRENGTH_UNITS}")
    for name in ("search_steps", "n_new_tokens", "lens_k", "repetition_n", "max_rows", "llm_max_concurrency",
                 "llm_max_tokens"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(name, "a positive integer")
    if not isinstance(cfg.n_samples, int) or cfg.n_samples < 0:
        raise bad("n_samples", "a non-negative integer")
    if not 0 < cfg.kl_rtol < 1:
        raise bad("kl_rtol", "a number in (0, 1)")
    if not cfg.temperature > 0:
        raise bad("temperature", "a positive number")
    if not isinstance(cfg.top_k, int) or cfg.top_k < 0:
        raise bad("top_k", "a non-negative integer (0: off)")
    if not 0 < cfg.top_p <= 1:
        raise bad("top_p", "a number in (0, 1] (1: off)")
    if cfg.concept_descriptions is not None:
        names = set(cfg.concepts) if cfg.concepts is not None else set(planted_concepts())
        unknown = sorted(set(cfg.concept_descriptions) - names)
        if unknown:
            raise bad("concept_descriptions", f"descriptions of concepts among {sorted(names)} (unknown: {unknown})")


def run(cfg: Config, model: Any = None, progress: bool = False) -> EvalResult:
    """Steer every direction at every target KL and measure the concept's rise, the
    continuations and (when an endpoint is configured) the LLM judge's scores.

    Parameters
    ----------
    cfg
        The settings (:class:`Config`).
    model
        An already-loaded model (else ``cfg.model`` is loaded).
    progress
        Show progress bars.

    Returns
    -------
    An :class:`~saekit.evals.common.EvalResult` with one row per (concept, direction,
    target KL), plus a ``clean`` row per concept (no steering), and the figure
    ``steering.png``. Columns:

    - ``concept``, ``method``, ``source``, ``select_by``, ``feature``, ``selection_f1``,
      ``sign``: the direction (:class:`Direction`); random directions get one row per
      concept, measured against that concept;
    - ``target_kl``, ``strength`` (α), ``strength_rel`` (α / median norm), ``kl``
      (reached), ``calibrated``;
    - ``lens_tokens`` (the top 10 logit-lens tokens), ``lens_concept_hits`` (concept
      tokens among the top ``lens_k``);
    - ``delta_logprob`` (steered minus clean log of the concept's next-token mass after the
      prompts, mean over prompts), ``concept_prob`` (that mass, steered);
    - ``success_greedy`` (share of prompts whose greedy continuation holds a concept
      token), ``success_at_k`` (share with one in any of the k = ``n_samples`` sampled
      ones), ``concept_tokens_per_gen`` and ``lens_success`` (Arad et al.'s success@k:
      concept tokens, and the direction's top-``lens_k`` lens tokens, per sampled
      continuation);
    - ``perplexity`` (exp of the clean model's mean per-token NLL of a continuation,
      geometric mean over all continuations), ``repetition`` (mean repeated n-gram share);
    - ``judge_concept``, ``judge_fluency``, ``judge_score`` (means over the judged
      continuations; NaN without a judge), ``judge_unparsed``;
    - ``example``: the first prompt and its greedy continuation.
    """
    validate(cfg)
    t_start = time.perf_counter()
    model = load_model(model if model is not None else cfg.model, device=cfg.device)
    width = hook_width(model, cfg.hook)
    loaded = load_dictionaries(cfg.dictionaries, model, cfg.hook, transcoders="writes")
    names = [n + "'" if n in ("diffmean", "random", "clean") else n for n, _ in loaded]
    dicts = [d for _, d in loaded]
    vocab = concept_vocabulary(model, cfg.concepts)
    concepts = list(vocab)
    concept_ids = [torch.tensor(vocab[c]) for c in concepts]
    prompts = tokenize_prompts(model, cfg.prompts)
    n_ctx = int(getattr(model.cfg, "n_ctx", 1 << 30))
    if prompts.tokens.shape[1] + cfg.n_new_tokens > n_ctx:
        raise ValueError(f"steering config: the longest prompt ({prompts.tokens.shape[1]} tokens with BOS) plus "
                         f"n_new_tokens={cfg.n_new_tokens} exceeds the model's context of {n_ctx}")
    client = client_from_config(cfg.llm_base_url, cfg.llm_model, cfg.llm_api_key, cache_dir=cfg.llm_cache_dir,
                                max_concurrency=cfg.llm_max_concurrency) if cfg.judge else None

    # Directions: features and DiffMeans chosen on held-out text, random controls; the
    # activations stream batch by batch, so n_tokens is bounded by time, not memory.
    tokens = load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len, seed=cfg.seed)
    mask = token_mask(tokens, model)
    current, following = concept_positions(tokens, vocab)
    selector = DirectionSelector(concepts, dicts, names, cfg.select_by, width, cfg.n_random, cfg.random_kind,
                                 cfg.seed)
    # transcoders that write cfg.hook are selected by their codes at their own input hook
    batches = harvest(model, [cfg.hook, *input_hooks(loaded, cfg.hook)], tokens, cfg.batch_size, mask=mask,
                      stream=True, progress=progress)
    for lo, batch in zip(range(0, len(tokens), cfg.batch_size), batches, strict=True):
        keep = mask[lo:lo + cfg.batch_size]
        selector.update(batch[cfg.hook], current[lo:lo + cfg.batch_size][keep], following[lo:lo + cfg.batch_size][keep],
                        inputs=batch)
    scale = selector.median_norm()
    directions = selector.directions(cfg.signs)
    vectors = torch.stack([d.vector for d in directions])
    lens = logit_lens(model, cfg.hook, vectors, cfg.lens_k)

    fw = SteeredForwards(model, cfg.hook, cfg.max_rows)
    _, clean_lp, clean_logp = fw.next_token(prompts, torch.zeros(1, width), None, concept_ids)
    clean_lp, clean_logp = clean_lp[0], clean_logp[0]
    unit = scale if cfg.strength_unit == "median_norm" else 1.0
    bracket = (cfg.strength_range[0] * unit, cfg.strength_range[1] * unit)
    cal = calibrate(fw, prompts, vectors, list(cfg.target_kls), clean_logp, concept_ids, bracket, cfg.search_steps,
                    cfg.kl_rtol, progress)

    # Continuations: the clean model first, then every (direction, target) at its strength.
    T = len(cfg.target_kls)
    deltas = torch.cat([torch.zeros(1, width), (vectors[:, None, :] * cal.strength[..., None]).flatten(0, 1)])
    gens, nll = generate(fw, prompts, deltas, cfg.n_new_tokens, cfg.n_samples, cfg.temperature, cfg.top_k,
                         cfg.top_p, cfg.seed, progress)
    rep = repetition_rate(gens, cfg.repetition_n)
    tok = get_tokenizer(model)
    sampled = slice(1, None) if cfg.n_samples else slice(0, 1)

    def config_metrics(g: int) -> dict[str, Any]:  # concept-independent metrics of generation config g
        return {"perplexity": float(nll[g].mean().exp()), "repetition": float(rep[g].mean()),
                "example": prompts.texts[0] + tok.decode(gens[g, 0, 0].tolist(), skip_special_tokens=True)}

    def concept_metrics(g: int, c: int, lp: Tensor, lens_ids: Tensor | None) -> dict[str, Any]:
        hits = torch.isin(gens[g], concept_ids[c])  # [P, S, n_new]
        has = hits.any(-1)
        out = {"delta_logprob": float((lp[:, c] - clean_lp[:, c]).mean()),
               "concept_prob": float(lp[:, c].exp().mean()),
               "lens_concept_hits": int(torch.isin(lens_ids, concept_ids[c]).sum()) if lens_ids is not None else None,
               "success_greedy": float(has[:, 0].float().mean()),
               "success_at_k": float(has[:, 1:].any(-1).float().mean()) if cfg.n_samples else math.nan,
               "concept_tokens_per_gen": float(hits[:, sampled].sum(-1).float().mean()),
               "lens_success": (float(torch.isin(gens[g][:, sampled], lens_ids).sum(-1).float().mean())
                                if lens_ids is not None else math.nan)}
        return out

    rows: list[dict[str, Any]] = []
    row_config: list[int] = []  # generation config of each row, for the judge
    clean_stats = config_metrics(0)
    for c, concept in enumerate(concepts):
        rows.append({"concept": concept, "method": "clean", "source": "clean", "select_by": "", "feature": -1,
                     "selection_f1": math.nan, "sign": 0, "target_kl": 0.0, "strength": 0.0, "strength_rel": 0.0,
                     "kl": 0.0, "calibrated": True, "lens_tokens": "",
                     **concept_metrics(0, c, clean_lp, None), **clean_stats})
        row_config.append(0)
    for j, d in enumerate(directions):
        lens_text = ", ".join(tok.decode([i]).strip() or repr(tok.decode([i])) for i in lens[j, :10].tolist())
        for t, target in enumerate(cfg.target_kls):
            g = 1 + j * T + t
            base = {"method": d.method, "source": d.source, "select_by": d.select_by, "feature": d.feature,
                    "selection_f1": d.selection_f1, "sign": d.sign, "target_kl": float(target),
                    "strength": float(cal.strength[j, t]), "strength_rel": float(cal.strength[j, t]) / scale,
                    "kl": float(cal.kl[j, t]), "calibrated": bool(cal.calibrated[j, t]), "lens_tokens": lens_text}
            stats = config_metrics(g)
            for c, concept in enumerate(concepts):
                if d.concept is not None and d.concept != concept:
                    continue
                rows.append({"concept": concept, **base, **concept_metrics(g, c, cal.concept_logprob[j, t], lens[j]),
                             **stats})
                row_config.append(g)
    judge_info: dict[str, Any] = {}
    if client is not None:
        judge_info = _judge_rows(client, rows, row_config, gens, prompts, concepts, cfg, tok, progress)
    else:
        for r in rows:
            r.update(judge_concept=math.nan, judge_fluency=math.nan, judge_score=math.nan, judge_unparsed=0)
    for r in rows:  # fixed column order: the example text last
        r["example"] = r.pop("example")

    summary = _summary(rows, cfg, scale, cal, fw, time.perf_counter() - t_start, judge_info)
    config = {k: v for k, v in asdict(cfg).items() if k != "llm_api_key"}
    config.update(model_name=model_name(model), median_norm=scale, strength_bracket=list(bracket),
                  concept_tokens={c: vocab[c] for c in concepts}, n_selection_tokens=int(mask.sum()),
                  prompt_tokens=prompts.lengths.tolist(), llm=repr(client) if client else None)
    return EvalResult("steering", rows, summary, config, {"steering.png": _figure(rows, cfg)})


def _judge_rows(client: Any, rows: list[dict], row_config: list[int], gens: Tensor, prompts: Prompts,
                concepts: list[str], cfg: Config, tok: Any, progress: bool) -> dict[str, Any]:
    """Fill the judge columns: the sampled continuations (the greedy one when there are
    none) of each row, prompt + continuation, against the row's concept description."""
    descriptions = {}
    for c, words in zip(concepts, _concept_words(cfg, concepts), strict=True):
        descriptions[c] = (cfg.concept_descriptions or {}).get(c) or f"{c} (words such as {', '.join(words[:6])})"
    which = list(range(1, gens.shape[2])) if cfg.n_samples else [0]
    texts: dict[tuple[int, int, int], str] = {}
    items, owners = [], []
    for i, (r, g) in enumerate(zip(rows, row_config, strict=True)):
        for p in range(gens.shape[1]):
            for s in which:
                key = (g, p, s)
                if key not in texts:
                    texts[key] = prompts.texts[p] + tok.decode(gens[g, p, s].tolist(), skip_special_tokens=True)
                items.append((descriptions[r["concept"]], texts[key]))
                owners.append(i)
    scores = judge(client, items, cfg.llm_max_tokens, progress)
    per_row: list[list[JudgeScore]] = [[] for _ in rows]
    for i, s in zip(owners, scores, strict=True):
        per_row[i].append(s)

    def mean(xs: list[float | None]) -> float:
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else math.nan

    for r, ss in zip(rows, per_row, strict=True):
        r.update(judge_concept=mean([s.concept for s in ss]), judge_fluency=mean([s.fluency for s in ss]),
                 judge_score=mean([s.score for s in ss]), judge_unparsed=sum(s.score is None for s in ss))
    return {"judge_requests": client.stats.requests, "judge_cache_hits": client.stats.cache_hits,
            "judge_unparsed": sum(s.score is None for s in scores), "judge_model": client.model}


def _concept_words(cfg: Config, concepts: list[str]) -> list[list[str]]:
    words = cfg.concepts if cfg.concepts is not None else planted_concepts()
    return [list(words[c]) for c in concepts]


def _methods(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["method"] for r in rows if r["method"] != "clean"))


def _values(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]


def _mean(rows: list[dict], key: str) -> float:
    xs = _values(rows, key)
    return sum(xs) / len(xs) if xs else math.nan


def _se(rows: list[dict], key: str) -> float:
    """Standard error of :func:`_mean` over the rows (concepts × directions × prompts)."""
    return mean_se(_values(rows, key))


def _summary(rows: list[dict], cfg: Config, scale: float, cal: Calibration, fw: SteeredForwards, seconds: float,
             judge_info: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers: per method and target KL the mean over concepts (and random
    directions) of the concept's Δ log-prob and success; the forward throughput."""
    out: dict[str, Any] = {"median_norm": scale, "directions": int(cal.strength.shape[0]),
                           "calibrated_fraction": float(cal.calibrated.float().mean()),
                           "calibration_steps": cal.steps}
    clean = [r for r in rows if r["method"] == "clean"]
    out["clean: success_at_k"] = _mean(clean, "success_at_k")
    out["clean: perplexity"] = _mean(clean, "perplexity")
    judged = bool(judge_info)
    for m in _methods(rows):
        for sign in cfg.signs:
            for t in cfg.target_kls:
                sel = [r for r in rows if r["method"] == m and r["target_kl"] == t and r["sign"] == sign]
                tag = f"{m}{'' if len(cfg.signs) == 1 else ' ' + '+-'[sign < 0]} @KL {t:g}"
                out[f"{tag}: delta_logprob"] = _mean(sel, "delta_logprob")
                out[f"{tag}: delta_logprob_se"] = _se(sel, "delta_logprob")
                out[f"{tag}: success_at_k"] = _mean(sel, "success_at_k")
                if judged:
                    out[f"{tag}: judge_score"] = _mean(sel, "judge_score")
    out.update(judge_info)
    out.update(lm_rows=fw.rows, lm_tokens=fw.tokens, lm_tokens_per_s=fw.tokens / max(fw.seconds, 1e-9),
               seconds=seconds)
    return out


def _figure(rows: list[dict], cfg: Config) -> bytes:
    """Δ log-prob of the concept, success@k and perplexity against the target KL, one
    line per method (mean over concepts; random: over concepts and directions)."""
    from matplotlib.figure import Figure

    panels = [("delta_logprob", "Δ log-prob of concept tokens"), ("success_at_k" if cfg.n_samples else
              "success_greedy", f"success@{cfg.n_samples}" if cfg.n_samples else "success (greedy)"),
              ("perplexity", "perplexity under the clean model")]
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels))
    clean = [r for r in rows if r["method"] == "clean"]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for m in _methods(rows):
            for sign in sorted({r["sign"] for r in rows if r["method"] == m}, reverse=True):
                ys = [_mean([r for r in rows if r["method"] == m and r["sign"] == sign and r["target_kl"] == t], key)
                      for t in cfg.target_kls]
                label = m + ("" if sign == 1 else " (−)")
                ax.plot(cfg.target_kls, ys, marker="o", label=label, linestyle="--" if m == "random" else "-",
                        color="grey" if m == "random" else None)
        ax.axhline(_mean(clean, key), color="black", linestyle=":", linewidth=1, label="clean")
        ax.set_xscale("log")
        ax.set_xticks(cfg.target_kls, [f"{t:g}" for t in cfg.target_kls])
        ax.minorticks_off()
        ax.set_xlabel("target KL (nats)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"steering at {cfg.hook}", fontsize=11)
    return figure_png(fig)
