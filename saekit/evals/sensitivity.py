"""Sensitive directions (Lee & Heimersheim 2024) and the error-pathology re-test (Gurnee 2024).

How much does the next-token distribution move when an activation is pushed a distance
``r`` along a direction, and does that depend on which kind of direction it is? At a
hook, every non-BOS position of every window gets its own unit direction ``u`` from a
*family*, all positions are perturbed at once, ``x ← x + r·u``, and the KL(P_clean ‖ Q)
is read per token over a grid of ``r``. The families (``evaluators.md`` §A1, after
``dajale423/error_pathology``):

==================  =======================================================  ==========
family              u ∝                                                       uses x?
==================  =======================================================  ==========
``isotropic``       ``s·z − x``, ``z ~ N(0, I)``, ``s`` = median ‖x‖           yes
``cov_difference``  ``v − x``, ``v ~ N(μ, Σ + ridge·I)``                       yes
``cov_mixture``     ``v₁ − v₂``, ``v₁, v₂ ~ N(μ, Σ + ridge·I)`` i.i.d.         no
``real_difference`` ``x_j − x``, ``x_j`` another real activation at the hook   yes
``real_mixture``    ``x_i − x_j``, two real activations (identical pairs drawn no
                    again)
``feature_active``  ``W_dec[f]``, ``f`` uniform over the features active       no
                    anywhere in the batch of windows
``feature_alive``   ``W_dec[f]``, alive in the evaluated tokens but not        no
                    active in this batch
``feature_dead``    ``W_dec[f]``, never active in the evaluated tokens         no
==================  =======================================================  ==========

``μ, Σ`` and the real activations are the hook's own, from the evaluated tokens (BOS,
separators and padding excluded), as in the paper, which draws them from the same token
tensor it perturbs. A dictionary on an MLP-hidden hook (``blocks.L.mlp.hook_post``) is
evaluated at that hook: its directions are in neuron space and so are the baselines.

The *error-pathology* test: for each dictionary, KL of splicing its reconstruction x̂
(:func:`saekit.splice`) against ``x + ε·u`` with the per-token ``ε = ‖x̂ − x‖`` and ``u``
from each baseline family; the table reports the ratio KL(x̂) / KL(x + ε·u). Gurnee
found 2–4.5× against isotropic ``u`` on GPT-2 small; Lee & Heimersheim found ≈1 against
the cov-mixture baseline at layer 6.

Batching: the directions of every family × every ``r`` (and the pathology variants) for
a batch of windows go through one :func:`saekit.evals.common.perturbation_kl` call,
which stacks them along the batch axis (``max_rows`` windows per forward).

Deviations from the paper's code, and why:

- Position 0 (BOS) is never perturbed and KL is averaged over the positions whose input
  is a real token, including the last (saekit's convention, DESIGN.md). The paper
  perturbs every position, BOS included, and drops the last position's KL.
- The radius grid can be absolute (the paper's) or in units of the hook's median
  activation norm (``radius_unit``), so one recipe carries over to other models.
- ``cov_ridge``: the paper adds an absolute 0.01 to Σ's diagonal at GPT-2 L6 resid_pre.
  By default saekit adds 5e-4 × the mean per-dimension variance, about the paper's ratio
  (0.01 against 121²/768 ≈ 19); an absolute 0.01 on the demo LM's MLP hidden layer,
  whose mean variance is 0.11, would add 9% isotropic noise to the baseline.
- Σ is sampled through its eigendecomposition with negative eigenvalues clipped, so a
  rank-deficient hook (few tokens, dead neurons) still samples.
- Feature classes come from :meth:`Dictionary.active` (the paper: code > 1e-8), so an
  SNMF uses its own firing rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.harvest import forward_hooks
from saekit.data import load_tokens
from saekit.evals.common import (
    CovGaussian,
    EvalConfig,
    EvalResult,
    check_choices,
    clean_log_probs,
    encode_rows,
    fit_gaussian,
    input_hooks,
    input_mask,
    kl_per_token,
    load_dictionaries,
    load_model_for,
    median_norm,
    perturbation_kl,
    settings,
)
from saekit.evals.sensitivity_page import page_sections, readable_tables
from saekit.metrics.reconstruction import unit_rows
from saekit.metrics.uncertainty import bootstrap_se
from saekit.models import model_device, splice, validate_hook
from saekit.report import figure_png

BASELINE_FAMILIES = ("isotropic", "cov_difference", "cov_mixture", "real_difference", "real_mixture")
FEATURE_CLASSES = ("active", "alive", "dead")
RADIUS_UNITS = ("absolute", "median_norm")


@dataclass
class Config(EvalConfig):
    """Sensitive directions at ``hook``; defaults are the demo-LM settings."""

    hook: str = "blocks.2.mlp.hook_post"
    """Hook perturbed (TransformerLens name). Every dictionary must be fitted on it, or be a
    transcoder that writes it (its codes come from its own input hook, its directions and
    its splice are at this one)."""
    dictionaries: list[str] | None = field(
        default_factory=lambda: ["checkpoints/demo-topk", "checkpoints/demo-snmf"])
    """Dictionaries whose feature directions (and reconstructions, for the pathology
    test) are evaluated; paths, registry ids or ``Dictionary`` objects. ``[]`` or None:
    baseline families only."""
    n_tokens: int = 8192
    """Tokens evaluated; also the source of μ, Σ and the real activations."""
    batch_size: int = 16
    """Windows per batch: the unit over which 'active' features are defined (the paper: 64)."""
    families: list[str] = field(default_factory=lambda: list(BASELINE_FAMILIES))
    """Baseline direction families (see the module docstring)."""
    feature_classes: list[str] = field(default_factory=lambda: list(FEATURE_CLASSES))
    """Which dictionary features to draw from: ``active``, ``alive``, ``dead``."""
    radii: list[float] = field(default_factory=lambda: [0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4,
                                                        0.5, 0.6, 0.75, 1.0])
    """Perturbation sizes r, in ``radius_unit``."""
    radius_unit: str = "median_norm"
    """``absolute`` (L2 units of the hook, as the paper) or ``median_norm`` (multiples of
    the median activation norm at the hook)."""
    isotropic_scale: float | None = None
    """``s`` in the isotropic family's ``s·z − x``; None: the median activation norm (the
    paper hard-codes 121, GPT-2's median norm at L6 resid_pre)."""
    cov_ridge: float | None = None
    """Added to Σ's diagonal before sampling (the paper: 0.01, absolute); None: 5e-4 ×
    the mean per-dimension variance (see the module docstring)."""
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    """Per-token KL quantiles reported per family and r (columns ``kl_q10`` ...)."""
    pathology: bool = True
    """Run the error-pathology test for each dictionary."""
    pathology_families: list[str] = field(default_factory=lambda: ["isotropic", "cov_mixture", "real_mixture"])
    """Baseline families the reconstruction is compared against at matched ε."""
    reference_radius: float | None = None
    """r (in ``radius_unit``) whose mean KL per family goes into the summary; None: the
    middle of ``radii``."""
    max_rows: int = 64
    """Windows per forward pass after stacking variants (see ``perturbation_kl``)."""


# --------------------------------------------------------------------------- shared pieces


# --------------------------------------------------------------------------- directions


#: Kept for old imports: :func:`saekit.metrics.unit_rows` is the one row normaliser.
unit = unit_rows


def baseline_directions(family: str, x: Tensor, pool: Tensor, gauss: CovGaussian | None,
                        iso_scale: float, g: torch.Generator) -> Tensor:
    """Unit directions ``[n, d]`` of a baseline family for activations ``x [n, d]``."""
    n, d = x.shape
    if family == "isotropic":
        v = iso_scale * torch.randn(n, d, generator=g) - x
    elif family == "cov_difference":
        v = gauss.sample(n, g) - x
    elif family == "cov_mixture":
        v = gauss.sample(n, g) - gauss.sample(n, g)
    elif family in ("real_difference", "real_mixture"):
        a = x if family == "real_difference" else pool[torch.randint(len(pool), (n,), generator=g)]
        v = pool[torch.randint(len(pool), (n,), generator=g)] - a
        for _ in range(10):  # the paper drops identical pairs; draw those again
            same = v.abs().sum(-1) == 0
            if not same.any():
                break
            v[same] = pool[torch.randint(len(pool), (int(same.sum()),), generator=g)] - a[same]
    else:
        raise ValueError(f"unknown family {family!r}; allowed: {list(BASELINE_FAMILIES)}")
    return unit(v)


def feature_directions(W_dec: Tensor, candidates: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` unit decoder rows drawn uniformly (with replacement) from the feature ids
    ``candidates``, and the ids drawn."""
    pick = candidates[torch.randint(len(candidates), (n,), generator=g)]
    return unit(W_dec[pick].float()), pick


# --------------------------------------------------------------------------- the evaluator


class _Variant(NamedTuple):
    family: str
    dictionary: str
    experiment: str  # "curve" or "pathology"
    r: float | None  # config units; None for pathology
    source: int  # index into the batch's direction table


def run(cfg: Config, model: Any = None, progress: bool = False) -> EvalResult:
    """Sensitivity curves per direction family, and the error-pathology ratios.

    Parameters
    ----------
    cfg
        The settings (:class:`Config`); ``cfg.dictionaries`` may hold ``Dictionary``
        objects as well as paths.
    model
        An already-loaded model (else ``cfg.model`` is loaded).
    progress
        Show a progress bar over batches.

    Returns
    -------
    EvalResult
        Rows: one per (experiment, family, dictionary, r): ``experiment`` is ``curve``
        (KL against r) or ``pathology`` (matched-ε baseline vs the reconstruction; ``r``
        is NaN and ``r_abs`` the mean ε); columns ``n_tokens`` (tokens averaged over),
        ``n_windows`` (windows the standard errors are over),
        ``n_directions`` (distinct directions drawn: one per token for the random
        families, distinct features for the feature classes), ``kl_mean``, ``kl_q..``,
        ``kl_recon`` and ``kl_ratio`` (pathology only).
        Summary: the median norm, the mean KL per family at the reference radius, and
        each pathology ratio. Tables ``at_reference_radius`` and ``pathology``: the same
        numbers as :class:`~saekit.report.Stat` cells (± SE, n windows) for the page,
        which opens with what is measured and how to read it.
    """
    check_choices(cfg.families, BASELINE_FAMILIES, "families")
    check_choices(cfg.feature_classes, FEATURE_CLASSES, "feature_classes")
    check_choices(cfg.pathology_families, BASELINE_FAMILIES, "pathology_families")
    check_choices([cfg.radius_unit], RADIUS_UNITS, "radius_unit")
    if not cfg.radii or any(not (r > 0 and math.isfinite(r)) for r in cfg.radii):
        raise ValueError(f"radii must be a non-empty list of positive numbers, got {cfg.radii}")
    if cfg.reference_radius is not None and float(cfg.reference_radius) not in [float(r) for r in cfg.radii]:
        raise ValueError(f"reference_radius {cfg.reference_radius} is not one of radii {cfg.radii}")
    if any(not 0 <= q <= 1 for q in cfg.quantiles):
        raise ValueError(f"quantiles must lie in [0, 1], got {cfg.quantiles}")
    for name in ("n_tokens", "batch_size", "max_rows", "ctx_len"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")

    model = load_model_for(cfg, model)
    validate_hook(model, cfg.hook)
    dicts = load_dictionaries(cfg.dictionaries, model, cfg.hook, transcoders="writes")
    dev = model_device(model)
    g = torch.Generator().manual_seed(cfg.seed)

    tokens = load_tokens(cfg.data, model, cfg.n_tokens, cfg.ctx_len, seed=cfg.seed)
    mask = input_mask(tokens, model)
    # The hook's activations of every evaluated window, unmasked ([windows, seq, d]), on CPU,
    # and those of the hooks transcoders encode (they write cfg.hook), from the same passes.
    hooks = [cfg.hook, *input_hooks(dicts, cfg.hook)]
    passes = [forward_hooks(model, hooks, tokens[i:i + cfg.batch_size].to(dev))
              for i in range(0, len(tokens), cfg.batch_size)]
    read = {h: torch.cat([p[h].float().cpu() for p in passes]) for h in hooks}
    del passes
    acts = read[cfg.hook]
    pool = acts[mask]
    if len(pool) < 2:
        raise ValueError(f"data {cfg.data!r} gave {len(pool)} real tokens; need at least 2")
    med = median_norm(pool)
    unit_scale = med if cfg.radius_unit == "median_norm" else 1.0
    iso_scale = med if cfg.isotropic_scale is None else float(cfg.isotropic_scale)
    needs_cov = {"cov_difference", "cov_mixture"} & set(cfg.families + (cfg.pathology_families if cfg.pathology
                                                                         and dicts else []))
    gauss = fit_gaussian(pool, cfg.cov_ridge) if needs_cov else None

    # First pass per dictionary: which features fire in each batch, and ε per token.
    n_batches = math.ceil(len(tokens) / cfg.batch_size)
    fired: dict[str, Tensor] = {}
    eps: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, d in dicts:
            fired[name] = torch.zeros(n_batches, d.cfg.d_dict, dtype=torch.bool)
            eps[name] = torch.zeros(acts.shape[:2])
            for b in range(n_batches):
                sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
                x = acts[sl][mask[sl]].to(dev)
                x_in = read[d.cfg.hook][sl][mask[sl]].to(dev) if d.cfg.is_transcoder else x
                codes = encode_rows(d, x_in)
                fired[name][b] = d.active(codes).any(0).cpu()
                e = eps[name][sl]
                x_hat = d.decode(codes, x_in) if d.cfg.is_transcoder else d.decode(codes)
                e[mask[sl]] = (x_hat - x).norm(dim=-1).float().cpu()
    alive = {name: f.any(0) for name, f in fired.items()}

    radii = [float(r) for r in cfg.radii]
    kls: dict[tuple[str, str, str, float], list[Tensor]] = {}
    recon_kls: dict[str, list[Tensor]] = {name: [] for name, _ in dicts}
    # Per window (KL sum, token count), for standard errors over windows.
    window_sums: dict[Any, list[Tensor]] = {}
    distinct: dict[tuple[str, str], set[int]] = {}
    batches = range(n_batches)
    if progress:
        batches = tqdm(batches, desc="sensitivity", unit="batch")
    for b in batches:
        sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
        toks, m, x = tokens[sl], mask[sl], acts[sl]
        flat = x.reshape(-1, x.shape[-1])
        table: list[Tensor] = []  # unit directions [windows, seq, d] (or ε-scaled for pathology)
        variants: list[_Variant] = []
        base_index: dict[str, int] = {}
        for fam in dict.fromkeys(cfg.families + (cfg.pathology_families if cfg.pathology and dicts else [])):
            base_index[fam] = len(table)
            table.append(baseline_directions(fam, flat, pool, gauss, iso_scale, g).view_as(x))
            if fam in cfg.families:
                variants += [_Variant(fam, "", "curve", r, base_index[fam]) for r in radii]
        for name, d in dicts:
            classes = {"active": fired[name][b].nonzero().squeeze(1),
                       "alive": (alive[name] & ~fired[name][b]).nonzero().squeeze(1),
                       "dead": (~alive[name]).nonzero().squeeze(1)}
            for cls in cfg.feature_classes:
                cand = classes[cls]
                if len(cand) == 0:  # e.g. no dead features: nothing to draw
                    continue
                u, pick = feature_directions(d.W_dec.detach().cpu(), cand, flat.shape[0], g)
                distinct.setdefault((name, cls), set()).update(pick[m.flatten()].unique().tolist())
                variants += [_Variant(f"feature_{cls}", name, "curve", r, len(table)) for r in radii]
                table.append(u.view_as(x))
            if cfg.pathology:
                for fam in cfg.pathology_families:
                    variants.append(_Variant(fam, name, "pathology", None, len(table)))
                    table.append(table[base_index[fam]] * eps[name][sl].unsqueeze(-1))
        scale = torch.tensor([1.0 if v.experiment == "pathology" else v.r * unit_scale for v in variants])
        source = torch.tensor([v.source for v in variants])

        def make(idx: Tensor, scale: Tensor = scale, source: Tensor = source, table: list[Tensor] = table) -> Tensor:
            return torch.stack([table[int(source[i])] * scale[i] for i in idx])

        clean = clean_log_probs(model, toks, batch_size=cfg.max_rows)
        kl = perturbation_kl(model, toks, cfg.hook, make, n_variants=len(variants), clean_logp=clean,
                             max_rows=cfg.max_rows)
        counts = m.sum(1).double()
        for v, k in zip(variants, kl, strict=True):
            key = (v.experiment, v.family, v.dictionary, v.r)
            kls.setdefault(key, []).append(k[m])
            window_sums.setdefault(key, []).append(torch.stack([(k * m).double().sum(1), counts], 1))
        for name, d in dicts:
            if cfg.pathology:
                with torch.no_grad(), splice(model, d):
                    logp = model(toks.to(dev)).float().log_softmax(-1).cpu()
                k = kl_per_token(clean, logp)
                recon_kls[name].append(k[m])
                window_sums.setdefault(("recon", name), []).append(torch.stack([(k * m).double().sum(1), counts], 1))

    rows = _rows(cfg, kls, recon_kls, eps, mask, distinct, unit_scale,
                 {k: torch.cat(v) for k, v in window_sums.items()})
    summary = _summary(cfg, rows, med, iso_scale, gauss, dicts, alive)
    config = {**settings(cfg),
              "dictionaries": [n for n, _ in dicts], "median_norm": med, "isotropic_scale_used": iso_scale,
              "cov_ridge_used": gauss.ridge if gauss is not None else None, "n_tokens_evaluated": int(mask.sum())}
    figures = _figures(cfg, rows)
    tables = readable_tables(rows, summary["reference_radius"])
    return EvalResult("sensitivity", rows, summary, config, figures, tables=tables,
                      sections=page_sections(cfg.hook, cfg.radius_unit, summary, tables, figures),
                      title=f"saekit sensitivity: which directions at {cfg.hook} move the output")


def _mean(t: Tensor) -> Tensor:
    return t[..., :1] / t[..., 1:]


def _ratio(t: Tensor) -> Tensor:
    return t[..., :1] / t[..., 1:2]


def _rows(cfg: Config, kls: dict, recon_kls: dict, eps: dict, mask: Tensor, distinct: dict,
          unit_scale: float, window_sums: dict) -> list[dict[str, Any]]:
    """One row per (experiment, family, dictionary, radius); ``kl_mean_se`` and
    ``kl_ratio_se`` are bootstrap standard errors over windows."""
    qcols = [f"kl_q{round(q * 100):02d}" for q in cfg.quantiles]
    rows = []
    for key, parts in kls.items():
        experiment, family, dname, r = key
        ws = window_sums[key]
        kl_se = float(bootstrap_se(_mean, ws)[0])
        ratio_se = math.nan
        k = torch.cat(parts).double().numpy()
        qs = np.quantile(k, cfg.quantiles) if len(k) else [math.nan] * len(qcols)
        if experiment == "curve":
            n_dir = len(distinct[(dname, family.removeprefix("feature_"))]) if dname else len(k)
            r_abs, recon, ratio = r * unit_scale, math.nan, math.nan
        else:
            r = math.nan
            n_dir = len(k)
            r_abs = float(eps[dname][mask].mean())
            recon = float(torch.cat(recon_kls[dname]).double().mean())
            ratio = recon / float(k.mean()) if k.mean() > 0 else math.nan
            # recon KL sum over perturbation KL sum, windows resampled jointly
            ratio_se = float(bootstrap_se(_ratio, torch.stack([window_sums[("recon", dname)][:, 0], ws[:, 0]], 1))[0])
        rows.append({"experiment": experiment, "family": family, "dictionary": dname, "r": r,
                     "r_abs": float(r_abs), "n_tokens": len(k), "n_windows": len(ws), "n_directions": n_dir,
                     "kl_mean": float(k.mean()) if len(k) else math.nan, "kl_mean_se": kl_se,
                     **{c: float(q) for c, q in zip(qcols, qs, strict=True)},
                     "kl_recon": recon, "kl_ratio": ratio, "kl_ratio_se": ratio_se})
    return rows


def _summary(cfg: Config, rows: list[dict], med: float, iso_scale: float, gauss: CovGaussian | None,
             dicts: list, alive: dict) -> dict[str, Any]:
    radii = [float(r) for r in cfg.radii]
    ref = float(cfg.reference_radius) if cfg.reference_radius is not None else radii[len(radii) // 2]
    s: dict[str, Any] = {"median_norm": med, "reference_radius": ref,
                         "reference_radius_abs": ref * (med if cfg.radius_unit == "median_norm" else 1.0)}
    for row in rows:
        if row["experiment"] == "curve" and row["r"] == ref:
            key = row["family"] if not row["dictionary"] else f"{row['dictionary']}/{row['family']}"
            s[f"kl_mean/{key}"] = row["kl_mean"]
            s[f"kl_mean_se/{key}"] = row["kl_mean_se"]
    for name, _ in dicts:
        s[f"dead_features/{name}"] = int((~alive[name]).sum())
    for row in rows:
        if row["experiment"] == "pathology":
            s[f"kl_recon/{row['dictionary']}"] = row["kl_recon"]
            s[f"eps_mean/{row['dictionary']}"] = row["r_abs"]
            s[f"pathology_ratio/{row['dictionary']}/{row['family']}"] = row["kl_ratio"]
            s[f"pathology_ratio_se/{row['dictionary']}/{row['family']}"] = row["kl_ratio_se"]
    return s


def _figures(cfg: Config, rows: list[dict]) -> dict[str, bytes]:
    from matplotlib.figure import Figure

    figs: dict[str, bytes] = {}
    curve = [r for r in rows if r["experiment"] == "curve"]
    if curve:
        fig = Figure(figsize=(11, 4.5))
        ax1, ax2 = fig.subplots(1, 2)
        keys = list(dict.fromkeys((r["family"], r["dictionary"]) for r in curve))
        iso = {r["r"]: r["kl_mean"] for r in curve if r["family"] == "isotropic" and not r["dictionary"]}
        for fam, dname in keys:
            pts = sorted((r for r in curve if (r["family"], r["dictionary"]) == (fam, dname)), key=lambda r: r["r"])
            xs = [p["r"] for p in pts]
            style = {"marker": ".", "ls": "--" if dname else "-", "label": f"{dname}: {fam}" if dname else fam}
            ax1.plot(xs, [p["kl_mean"] for p in pts], **style)
            if iso:  # sensitivity relative to the isotropic baseline, the paper's comparison
                ax2.plot(xs, [p["kl_mean"] / iso[p["r"]] if iso.get(p["r"]) else math.nan for p in pts], **style)
        unit_label = "× median ‖x‖" if cfg.radius_unit == "median_norm" else "L2 units"
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xlabel(f"r ({unit_label})")
        ax1.set_yscale("log")
        ax1.set_ylabel("mean KL(P ‖ Q) per token")
        ax2.set_ylabel("mean KL / mean KL of isotropic directions")
        ax2.axhline(1.0, color="grey", lw=0.8)
        ax1.legend(fontsize=7, loc="upper left")  # curves rise to the right: that corner stays clear
        fig.suptitle(f"Sensitivity to directions at {cfg.hook}")
        figs["sensitivity_curves.png"] = figure_png(fig)
    path = [r for r in rows if r["experiment"] == "pathology"]
    if path:
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        names = list(dict.fromkeys(r["dictionary"] for r in path))
        fams = list(dict.fromkeys(r["family"] for r in path))
        width = 0.8 / (len(fams) + 1)
        for i, name in enumerate(names):
            mine = {r["family"]: r for r in path if r["dictionary"] == name}
            ax.bar(i, next(iter(mine.values()))["kl_recon"], width, color="k", label="x̂ (spliced)" if i == 0 else None)
            for j, fam in enumerate(fams):
                r = mine[fam]
                bar = ax.bar(i + (j + 1) * width, r["kl_mean"], width, color=f"C{j}",
                             label=f"x + ε·u, {fam}" if i == 0 else None)
                ax.bar_label(bar, [f"{r['kl_ratio']:.2g}×"], fontsize=7)
        ax.set_xticks([i + width * len(fams) / 2 for i in range(len(names))], names)
        ax.set_ylabel("mean KL per token")
        ax.set_title("Error pathology: KL(x̂) / KL(x + ε·u) at matched ε")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not on them
        figs["error_pathology.png"] = figure_png(fig)
    return figs
