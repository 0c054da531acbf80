"""Synthetic activations (Giglemiani, Petrova, Mangat, Janiak & Heimersheim 2024).

Do activations assembled from a dictionary's features behave like the model's own? Four
kinds of activation at a hook (``evaluators.md`` §B, after ``jettjaniak/teren``):

- ``real``: the last-position activation of another prompt;
- ``random``: a sample of N(μ, Σ), the Gaussian with the activations' mean and covariance;
- ``synthetic_baseline`` (sparsity matched, a "bag of latents"): encode a real
  activation ``A``, replace each active feature by a random one of the
  ``baseline_neighbours`` (10) features closest in firing frequency, without repeats,
  keeping its code; decode;
- ``synthetic_structured`` (sparsity and geometry matched): from ``A``'s top feature
  ``a``, among the ``structured_neighbours`` (100) features closest in frequency take the
  anchor ``c`` whose decoder cosine to ``a`` is closest to ``anchor_cosine`` (0.42, the
  paper's mean base–target similarity); then for every active feature ``i`` take the
  unused feature ``j`` whose cosine to ``c`` best matches cos(a, i), with ``i``'s code;
  decode.

The synthetic kinds exist for every dictionary: the firing frequency is the
dictionary's logged one (``log_firing_freq``, SAELens' ``sparsity.safetensors``) or,
when it has none (SNMF), the fraction of the statistics prompts on which
:meth:`Dictionary.active` fires; directions are the unit rows of ``W_dec`` in the hook's
own space (for an SNMF on ``mlp.hook_post`` that is neuron space, not ``W_out·z``).

Experiment 1 (``sensitivity``): from a prompt's own last-position activation ``A``, walk
towards a target ``T`` of each kind, ``A_n = A + n·step·(T − A)/‖T − A‖`` for
``n < min(n_steps, ⌊‖T − A‖/step⌋)``, and read ``d(n)``: the L2 change of ``read_hook``
at the last position against step 0, and/or KL(P_0 ‖ P_n) of the next-token
distribution. The **max-slope step** MS is argmax_n d(n) − d(n−1) (step 0 takes step
1's slope); when no slope exceeds ``min_slope`` it is ``n_steps − 1``.

Experiment 2 (``plateau``): place a centre ``X`` of each kind at the last position of a
real prompt and walk towards a fresh N(μ, Σ) sample with the same steps. The **plateau
length** AP is the first step with d(n) ≥ ``plateau_threshold`` (``n_steps`` if none).
The centres are experiment 1's targets built from the same prompt.

Each kind's MS and AP distributions are compared to the real one with
``scipy.stats.ks_2samp``. Only the last position is perturbed; every (trajectory, step)
pair is one row of ``ctx_len`` tokens, and ``batch_size`` rows share a forward pass.

Scaling: with ``units = "median_norm"`` (the demo default), ``step`` is a fraction of
the median norm of the hook's last-position activations, and ``plateau_threshold`` and
``min_slope`` are fractions of the median norm of ``read_hook``'s; with ``"absolute"``
they are in L2 units, as the paper's 0.5 step, 20 threshold and 0.02 minimum slope at
GPT-2 L1 → L11 (``eval/synthetic_gpt2.toml``). KL thresholds are in nats either way. The
demo defaults: a step of 0.02 median norms puts a real target (≈1.4 median norms away)
≈70 steps out, near the paper's ≈100 steps of 0.5; the plateau threshold, 0.15 of the
read hook's median norm, is a choice (the paper gives GPT-2's 20 only in absolute units).

Read-outs on a small model: the L2 change of a residual a block or two after the hook is
dominated by the identity (or ``W_out``) path, so it grows linearly from every centre and
plateaus hardly differ by kind; the KL read-out passes the rest of the network and shows
them (``tests/test_eval_synthetic.py``). The KL plateau length (``plateau_threshold_kl``)
is saekit's addition; the paper's is L2 only. Its other summaries of a walk (the NL and
AUC-ratio steps) are not implemented.

Deviations from the paper's code, and why:

- Prompts are BOS-led windows of ``ctx_len`` tokens whose last token is a real token
  (saekit packs text SAELens-style); the paper takes the first 10 tokens of
  OpenWebText rows, without BOS.
- Step ``n`` sits at ``n·step`` exactly; the paper's ``linspace(0, 100, 100)`` puts it at
  ``n·step·100/99``.
- Synthetic activations are built into a fresh code vector; the paper edits the encoded
  vector in place, so a replacement could land on a feature it later reads.
- Experiment 2's real and synthetic centres are experiment 1's targets (the paper's
  notebook does the same for real centres); random centres and the Gaussian end points
  are fresh samples.
- The Gaussian is fitted with a small ridge (``cov_ridge``) and sampled through its
  eigendecomposition; the paper repairs Σ to be positive definite in a separate step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from saekit.activations.harvest import forward_hooks, hook_order
from saekit.data import load_tokens
from saekit.evals.common import (
    CovGaussian,
    EvalConfig,
    EvalResult,
    check_choices,
    encode_rows,
    fit_gaussian,
    input_hooks,
    input_mask,
    load_dictionaries,
    load_model_for,
    settings,
)
from saekit.evals.trajectories import (
    Trajectories,
    max_slope_step,
    plateau_length,
    run_trajectories,
    walks,
)
from saekit.metrics import unit_rows
from saekit.metrics.uncertainty import mean_se
from saekit.models import model_device, validate_hook
from saekit.report import figure_png

TYPES = ("real", "random", "synthetic_baseline", "synthetic_structured")
EXPERIMENTS = ("sensitivity", "plateau")
READOUTS = ("l2", "kl")
UNITS = ("absolute", "median_norm")


@dataclass
class Config(EvalConfig):
    """Synthetic-activation probes at ``hook``; defaults are the demo-LM settings."""

    hook: str = "blocks.2.mlp.hook_post"
    """Hook whose last-position activation is replaced (TransformerLens name)."""
    read_hook: str = "blocks.3.hook_resid_post"
    """Later hook whose last-position L2 change is the ``l2`` read-out."""
    dictionaries: list[str] | None = field(
        default_factory=lambda: ["checkpoints/demo-topk", "checkpoints/demo-snmf"])
    """Dictionaries the synthetic activations are built from (each fitted on ``hook``, or a
    transcoder that writes it);
    ``[]`` or None: only ``real`` and ``random``."""
    n_tokens: int = 0
    """Not used (must stay 0): ``n_prompts`` and ``n_stat_prompts`` set how much text is read."""
    ctx_len: int = 10
    """Prompt length in tokens, BOS first (the paper: 10)."""
    batch_size: int = 1024
    """(trajectory, step) rows per forward pass; each row is one prompt."""
    n_prompts: int = 200
    """Prompts per activation kind (the paper: 1000)."""
    n_stat_prompts: int = 2000
    """Further prompts whose last-position activations give μ, Σ, the real targets and
    (for dictionaries without a logged one) the firing frequency."""
    types: list[str] = field(default_factory=lambda: list(TYPES))
    """Activation kinds (see the module docstring)."""
    experiments: list[str] = field(default_factory=lambda: list(EXPERIMENTS))
    """``sensitivity`` (max-slope step towards a target) and/or ``plateau`` (plateau length
    around a centre)."""
    readouts: list[str] = field(default_factory=lambda: list(READOUTS))
    """``l2`` (change of ``read_hook``) and/or ``kl`` (KL of the next-token distribution)."""
    n_steps: int = 100
    """Steps per trajectory at most."""
    units: str = "median_norm"
    """``median_norm``: ``step`` is × the hook's median norm, ``plateau_threshold`` and
    ``min_slope`` × ``read_hook``'s; ``absolute``: L2 units (the paper's)."""
    step: float = 0.02
    """Step length (the paper: 0.5 absolute at GPT-2 L1 resid_pre). 0.02 median norms puts
    a real target about 70 steps away on the demo LM."""
    plateau_threshold: float = 0.15
    """d(n) that ends a plateau, L2 read-out (the paper: 20 absolute at GPT-2 L11; 0.15 ×
    the read hook's median norm is about 2 L2 units at the demo LM's last residual)."""
    min_slope: float = 0.001
    """Below this largest slope the max-slope step is ``n_steps − 1``, L2 read-out (the
    paper: 0.02 absolute)."""
    min_slope_kl: float = 0.02
    """The same for the KL read-out, in nats."""
    plateau_threshold_kl: float = 0.1
    """KL (nats) that ends a plateau, KL read-out; 0: plateau lengths from the L2 read-out
    only (as the paper)."""
    baseline_neighbours: int = 10
    """Frequency neighbours a synthetic-baseline replacement is drawn from."""
    structured_neighbours: int = 100
    """Frequency neighbours of the top feature the structured anchor is chosen from."""
    anchor_cosine: float = 0.42
    """Target decoder cosine between the top feature and the structured anchor."""
    cov_ridge: float | None = None
    """Added to Σ's diagonal; None: 5e-4 × the mean variance (as ``sensitivity``)."""


# --------------------------------------------------------------------------- synthetic activations


class FeatureStats(NamedTuple):
    """What the synthetic constructions need from a dictionary."""

    freq: np.ndarray
    """``[d_dict]`` firing frequency (fraction of tokens)."""
    order: np.ndarray
    """Feature ids sorted by frequency."""
    rank: np.ndarray
    """Position of each feature in ``order``."""
    W: Tensor
    """``[d_dict, d_in]`` unit decoder rows (CPU, float32)."""
    logged: bool
    """Whether ``freq`` is the dictionary's logged frequency (else estimated here)."""


def feature_stats(dictionary: Any, stat_acts: Tensor) -> FeatureStats:
    """Firing frequency (logged, or estimated on ``stat_acts``) and unit decoder rows."""
    if dictionary.log_firing_freq is not None:
        freq = (10.0 ** dictionary.log_firing_freq.double().cpu()).numpy()
        logged = True
    else:
        codes = encode_rows(dictionary, stat_acts.to(dictionary.W_dec.device))
        freq = dictionary.active(codes).double().mean(0).cpu().numpy()
        logged = False
    if freq.shape != (dictionary.cfg.d_dict,):
        raise ValueError(f"{dictionary!r}: firing frequency has shape {freq.shape}, expected ({dictionary.cfg.d_dict},)")
    order = np.argsort(freq, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    W = dictionary.W_dec.detach().float().cpu()
    return FeatureStats(freq, order, rank, unit_rows(W), logged)


def nearest(values: np.ndarray, order: np.ndarray, target: float, start: int, k: int,
            exclude: set[int]) -> list[int]:
    """The ``k`` ids closest to ``target`` in ``values`` (``order`` sorts them; ``start`` is a
    position in ``order`` next to the target), skipping ``exclude``: two pointers walking out."""
    out: list[int] = []
    lo, hi = start - 1, start
    n = len(order)
    while len(out) < k and (lo >= 0 or hi < n):
        take_hi = lo < 0 or (hi < n and abs(values[order[hi]] - target) <= abs(values[order[lo]] - target))
        idx = order[hi] if take_hi else order[lo]
        if take_hi:
            hi += 1
        else:
            lo -= 1
        if int(idx) not in exclude:
            out.append(int(idx))
    return out


def synthetic_baseline(codes: Tensor, active: Tensor, st: FeatureStats, k: int, rng: np.random.Generator) -> Tensor:
    """Bag of latents: each active feature replaced by one of its ``k`` nearest in
    frequency (not itself, no repeats), keeping its code. Returns new codes."""
    new = torch.zeros_like(codes)
    chosen: set[int] = set()
    for f in active.nonzero().flatten().tolist():
        cand = nearest(st.freq, st.order, st.freq[f], int(st.rank[f]), k, chosen | {f})
        if not cand:
            continue
        j = int(rng.choice(cand))
        chosen.add(j)
        new[j] = codes[f]
    return new


def synthetic_structured(codes: Tensor, active: Tensor, st: FeatureStats, k: int, anchor_cosine: float) -> Tensor:
    """Sparsity and cosine structure matched (the paper's ``homeschooled_v2``). Returns new codes."""
    new = torch.zeros_like(codes)
    act = active.nonzero().flatten()
    if len(act) == 0:
        return new
    a = int(act[codes[act].argmax()])
    cands = nearest(st.freq, st.order, st.freq[a], int(st.rank[a]), k, {a})
    if not cands:
        return new
    cos_cands = (st.W[cands] @ st.W[a]).numpy()
    anchor = cands[int(np.abs(cos_cands - anchor_cosine).argmin())]
    cos_c = (st.W @ st.W[anchor]).numpy()
    order_c = np.argsort(cos_c, kind="stable")
    sorted_c = cos_c[order_c]
    cos_a = (st.W[act] @ st.W[a]).numpy()
    used: set[int] = set()
    for i, target in zip(act.tolist(), cos_a, strict=True):
        start = int(np.searchsorted(sorted_c, target))
        j = nearest(cos_c, order_c, float(target), start, 1, used)
        if j:
            used.add(j[0])
            new[j[0]] = codes[i]
    return new


def build_synthetic(dictionary: Any, st: FeatureStats, A: Tensor, kind: str, cfg: Config,
                    rng: np.random.Generator) -> Tensor:
    """Synthetic activations ``[n, d]`` of ``kind`` built from real ones ``A [n, d_in]``, the
    rows the dictionary encodes (a transcoder's input hook: the synthetic activations are
    its predictions at its output hook, a skip transcoder's skip term taken from ``A``)."""
    with torch.no_grad():
        codes = encode_rows(dictionary, A.to(dictionary.W_dec.device)).float().cpu()
        active = dictionary.active(codes.to(dictionary.W_dec.device)).cpu()
        if kind == "synthetic_baseline":
            new = torch.stack([synthetic_baseline(c, m, st, cfg.baseline_neighbours, rng)
                               for c, m in zip(codes, active, strict=True)])
        else:
            new = torch.stack([synthetic_structured(c, m, st, cfg.structured_neighbours, cfg.anchor_cosine)
                               for c, m in zip(codes, active, strict=True)])
        new = new.to(dictionary.W_dec.device, dictionary.W_dec.dtype)
        if dictionary.cfg.is_transcoder:
            return dictionary.decode(new, A.to(dictionary.W_dec.device, dictionary.W_dec.dtype)).float().cpu()
        return dictionary.decode(new).float().cpu()


# --------------------------------------------------------------------------- the evaluator


def run(cfg: Config, model: Any = None, progress: bool = False) -> EvalResult:
    """Max-slope steps (experiment 1) and plateau lengths (experiment 2) per activation kind.

    Parameters
    ----------
    cfg
        The settings (:class:`Config`); ``cfg.dictionaries`` may hold ``Dictionary``
        objects as well as paths.
    model
        An already-loaded model (else ``cfg.model`` is loaded).
    progress
        Show progress bars.

    Returns
    -------
    EvalResult
        Rows: one per (experiment, read-out, kind, dictionary) with the metric
        (``max_slope_step`` or ``plateau_length``), ``n``, ``mean``, ``sd``, ``median``,
        ``q25``, ``q75``, ``frac_capped`` (no slope above the minimum / no plateau end),
        ``ks_vs_real`` and ``ks_pvalue`` (``scipy.stats.ks_2samp`` against the real kind),
        ``mean_distance`` (to the target or end point, hook L2 units) and ``mean_steps``.
        Summary: the scales used, each kind's mean metric and KS statistic.
    """
    from scipy.stats import ks_2samp

    check_choices(cfg.types, TYPES, "types")
    check_choices(cfg.experiments, EXPERIMENTS, "experiments")
    check_choices(cfg.readouts, READOUTS, "readouts")
    check_choices([cfg.units], UNITS, "units")
    if "real" not in cfg.types:
        raise ValueError(f"types must include 'real' (the KS reference), got {cfg.types}")
    if not cfg.experiments or not cfg.readouts:
        raise ValueError("experiments and readouts must each name at least one entry")
    for name in ("n_prompts", "n_stat_prompts", "n_steps", "batch_size", "baseline_neighbours",
                 "structured_neighbours"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.ctx_len < 2:
        raise ValueError(f"ctx_len must be at least 2 (BOS and a token), got {cfg.ctx_len}")
    if cfg.n_tokens:
        raise ValueError(f"n_tokens={cfg.n_tokens} is not used by the synthetic evaluator; "
                         "n_prompts and n_stat_prompts (of ctx_len tokens each) set the data")
    for name in ("step", "plateau_threshold", "min_slope", "min_slope_kl", "plateau_threshold_kl"):
        if not getattr(cfg, name) >= 0 or (name == "step" and cfg.step == 0):
            raise ValueError(f"{name} must be {'positive' if name == 'step' else 'non-negative'}, "
                             f"got {getattr(cfg, name)}")

    model = load_model_for(cfg, model)
    validate_hook(model, cfg.hook)
    want_l2 = "l2" in cfg.readouts
    if want_l2:
        validate_hook(model, cfg.read_hook)
        if cfg.read_hook == cfg.hook or hook_order(model, [cfg.hook, cfg.read_hook])[0] != cfg.hook:
            raise ValueError(f"read_hook {cfg.read_hook!r} must come after hook {cfg.hook!r} in the forward pass")
    dicts = load_dictionaries(cfg.dictionaries, model, cfg.hook, transcoders="writes")
    synth_types = [t for t in cfg.types if t.startswith("synthetic")]
    if synth_types and not dicts:
        raise ValueError(f"types {synth_types} need a dictionary; dictionaries is empty")
    dev = model_device(model)
    g = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # Prompts: BOS-led windows whose last token is a real token.
    need = cfg.n_prompts + cfg.n_stat_prompts
    tokens = load_tokens(cfg.data, model, int(need * 1.3 + 16) * cfg.ctx_len, cfg.ctx_len, seed=cfg.seed)
    keep = input_mask(tokens, model)[:, -1]
    tokens = tokens[keep]
    if len(tokens) < need:
        raise ValueError(f"data {cfg.data!r} gave {len(tokens)} usable prompts of {cfg.ctx_len} tokens; "
                         f"n_prompts + n_stat_prompts = {need}")
    tokens = tokens[torch.randperm(len(tokens), generator=g)[:need]]
    prompts = tokens[:cfg.n_prompts]  # the rest are the statistics prompts
    # transcoders that write cfg.hook encode their own input hook, read in the same passes
    hooks = list(dict.fromkeys([cfg.hook] + ([cfg.read_hook] if want_l2 else []) + input_hooks(dicts, cfg.hook)))
    last: dict[str, list[Tensor]] = {h: [] for h in hooks}
    for i in range(0, need, cfg.batch_size):
        got = forward_hooks(model, hooks, tokens[i:i + cfg.batch_size].to(dev))
        for h in hooks:
            last[h].append(got[h][:, -1].float().cpu())
    hook_last = torch.cat(last[cfg.hook])
    A, stat = hook_last[:cfg.n_prompts], hook_last[cfg.n_prompts:]
    med_hook = float(stat.norm(dim=-1).median())
    med_read = float(torch.cat(last[cfg.read_hook])[cfg.n_prompts:].norm(dim=-1).median()) if want_l2 else math.nan
    relative = cfg.units == "median_norm"
    step = cfg.step * (med_hook if relative else 1.0)
    threshold = cfg.plateau_threshold * (med_read if relative else 1.0)
    min_slope = cfg.min_slope * (med_read if relative else 1.0)
    gauss = fit_gaussian(stat, cfg.cov_ridge)

    # Targets (experiment 1) = centres (experiment 2), one per prompt and kind.
    kinds: list[tuple[str, str]] = []  # (type, dictionary name)
    targets: list[Tensor] = []
    stats: dict[str, FeatureStats] = {}
    for t in cfg.types:
        if t == "real":
            kinds.append((t, ""))
            targets.append(stat[torch.randint(len(stat), (cfg.n_prompts,), generator=g)])
        elif t == "random":
            kinds.append((t, ""))
            targets.append(gauss.sample(cfg.n_prompts, g))
        else:
            for name, d in dicts:
                rows = torch.cat(last[d.cfg.hook]) if d.cfg.is_transcoder else hook_last  # what d encodes
                if name not in stats:
                    stats[name] = feature_stats(d, rows[cfg.n_prompts:])
                kinds.append((t, name))
                targets.append(build_synthetic(d, stats[name], rows[:cfg.n_prompts], t, cfg, rng))
    K, P = len(kinds), cfg.n_prompts
    prompt_idx = torch.arange(P).repeat(K)  # kind-major: walk j = k·P + p
    T = torch.cat(targets)

    results: dict[tuple[str, str], tuple[Tensor, Tensor, Tensor]] = {}  # (experiment, readout) -> metric [K·P]
    curves: dict[tuple[str, str], Tensor] = {}
    distances: dict[str, Tensor] = {}
    want_kl = "kl" in cfg.readouts
    for exp in cfg.experiments:
        if exp == "sensitivity":
            tr = walks(prompt_idx, A.repeat(K, 1), T, step, cfg.n_steps)
        else:
            tr = walks(prompt_idx, T, gauss.sample(K * P, g), step, cfg.n_steps)
        l2, kl = run_trajectories(model, prompts, tr, cfg.hook, cfg.read_hook if want_l2 else None, want_kl,
                                  step, cfg.n_steps, cfg.batch_size, progress)
        distances[exp] = tr.distance
        for ro, d_n in (("l2", l2), ("kl", kl)):
            if ro not in cfg.readouts:
                continue
            curves[(exp, ro)] = d_n
            if exp == "sensitivity":
                ms = max_slope_step(d_n, tr.n_valid, min_slope if ro == "l2" else cfg.min_slope_kl, cfg.n_steps)
                results[(exp, ro)] = (ms, ms == cfg.n_steps - 1, tr.n_valid)
            elif ro == "l2" or cfg.plateau_threshold_kl > 0:
                ap = plateau_length(d_n, threshold if ro == "l2" else cfg.plateau_threshold_kl, cfg.n_steps)
                results[(exp, ro)] = (ap, ap == cfg.n_steps, tr.n_valid)

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"step": step, "plateau_threshold": threshold, "min_slope": min_slope,
                               "median_norm_hook": med_hook, "median_norm_read": med_read}
    for (exp, ro), (metric, capped, n_valid) in results.items():
        mname = "max_slope_step" if exp == "sensitivity" else "plateau_length"
        per_kind = metric.view(K, P).double().numpy()
        real = per_kind[kinds.index(("real", ""))]
        for k, (t, dname) in enumerate(kinds):
            v = per_kind[k]
            ks = ks_2samp(v, real) if t != "real" else None
            rows.append({"experiment": exp, "metric": mname, "readout": ro, "type": t, "dictionary": dname,
                         "n": P, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if P > 1 else math.nan,
                         "se": mean_se(v),
                         "median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)),
                         "q75": float(np.quantile(v, 0.75)),
                         "frac_capped": float(capped.view(K, P)[k].double().mean()),
                         "ks_vs_real": float(ks.statistic) if ks is not None else 0.0,
                         "ks_pvalue": float(ks.pvalue) if ks is not None else 1.0,
                         "mean_distance": float(distances[exp].view(K, P)[k].mean()),
                         "mean_steps": float(n_valid.view(K, P)[k].double().mean())})
            key = f"{mname}/{ro}/{t}" + (f"/{dname}" if dname else "")
            summary[key] = float(v.mean())
            summary[f"se/{key}"] = rows[-1]["se"]  # over prompts, each an independent walk
            if t != "real":
                summary[f"ks/{key}"] = float(ks.statistic)
    config = {**settings(cfg),
              "dictionaries": [n for n, _ in dicts],
              "frequency_source": {n: ("logged" if s.logged else "estimated on the statistics prompts")
                                   for n, s in stats.items()}}
    return EvalResult("synthetic", rows, summary, config, _figures(cfg, kinds, curves, results, P))


def _figures(cfg: Config, kinds: list[tuple[str, str]], curves: dict, results: dict, P: int) -> dict[str, bytes]:
    from matplotlib.figure import Figure

    figs: dict[str, bytes] = {}
    labels = [t if not d else f"{t} ({d})" for t, d in kinds]
    for (exp, ro), (metric, _, _) in results.items():
        fig = Figure(figsize=(10, 4))
        ax1, ax2 = fig.subplots(1, 2)
        d_n = curves[(exp, ro)].view(len(kinds), P, -1)
        per_kind = metric.view(len(kinds), P).numpy()
        bins = np.linspace(0, cfg.n_steps, 26)
        for k, label in enumerate(labels):
            ax1.hist(per_kind[k], bins=bins, histtype="step", lw=1.5, label=label, density=True)
            curve = d_n[k].nan_to_num(0).sum(0) / (~d_n[k].isnan()).sum(0).clamp_min(1)
            ax2.plot(curve[: int((~d_n[k].isnan()).any(0).sum())].numpy(), label=label)
        mname = "max-slope step" if exp == "sensitivity" else "plateau length"
        ax1.set_xlabel(f"{mname} (steps)")
        ax1.set_ylabel("density")
        ax1.legend(fontsize=7)
        ax2.set_xlabel("step n")
        ax2.set_ylabel("mean d(n): " + ("L2 change at " + cfg.read_hook if ro == "l2" else "KL(P₀ ‖ Pₙ)"))
        title = "towards a target of each kind" if exp == "sensitivity" else "from a centre of each kind to N(μ, Σ)"
        fig.suptitle(f"{mname} ({ro} read-out), {title}, at {cfg.hook}")
        figs[f"{exp}_{ro}.png"] = figure_png(fig)
    return figs


__all__ = ["Config", "CovGaussian", "FeatureStats", "Trajectories", "build_synthetic", "feature_stats",
           "max_slope_step", "plateau_length", "run", "run_trajectories", "synthetic_baseline",
           "synthetic_structured", "walks"]
