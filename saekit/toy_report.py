"""``saekit toy``: reproduce the toy models of superposition and use them as ground truth.

:func:`run_toy` trains the experiments of :mod:`saekit.superposition` (features
represented against sparsity, the two-feature phase diagram, the pentagon, antipodal
pairs, adversarial sensitivity), then :func:`saekit.ground_truth.ground_truth_benchmark`
fits every dictionary kind on data whose features are known: the hidden activations ``h = W x``
of a trained toy model (true features: the columns ``W_i`` of its represented
features) and :func:`saekit.toy.synthetic_sparse_data`. It writes ``report.md``,
``toy.json`` (every number), PNG plots and ``index.html``, each atomically.

Only the standard library loads at import time (``saekit --help`` registers this
module's parser); torch and matplotlib load when a function runs.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from saekit import superposition as sp
from saekit.fileio import atomic_write_bytes
from saekit.ground_truth import (
    KINDS,
    MATCH,
    ground_truth_benchmark,
    synthetic_data,
    toy_hidden_data,
)
from saekit.jobs import claim_output
from saekit.report import (
    atomic_write_text,
    figure_png,
    html_img,
    html_page,
    html_table,
    markdown_table,
    text_table,
    write_csv,
)
from saekit.superposition import REGIMES, feature_norms, interference, torch_threads

# --------------------------------------------------------------------------- the report


def toy_settings(quick: bool = False) -> dict[str, Any]:
    """Every setting :func:`run_toy` uses (``quick``: the small one the tests run)."""
    train = dict(steps=1500 if quick else 5000, batch_size=1024, lr=1e-2 if quick else 5e-3,
                 lr_schedule="cosine")
    return {
        "train": train,
        "sweep": dict(n_features=20, n_hidden=5, importance=0.7, n_instances=1 if quick else 2,
                      sparsities=[0.0, 0.9, 0.99] if quick else [0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999]),
        "adversarial": dict(n_inputs=512 if quick else 2048, epsilon=1e-3),
        "phase": dict(relative_importance=[0.1, 1.0, 10.0] if quick else [10 ** (e / 3) for e in range(-3, 4)],
                      density=[0.01, 0.1, 1.0] if quick else [10 ** (e / 3) for e in range(-6, 1)],
                      n_instances=6, batch_size=512),
        "geometry": dict(n_features=5, n_hidden=2, n_instances=4,
                         sparsities=[0.0, 0.97] if quick else [0.0, 0.5, 0.8, 0.9, 0.95, 0.97]),
        "antipodal": dict(n_hidden=3, n_instances=2, sparsities=[0.0, 0.9] if quick else [0.0, 0.5, 0.8, 0.9, 0.95]),
        "benchmark": dict(
            toy=dict(n_features=40, n_hidden=10, sparsity=0.95, n_instances=2),
            synthetic=dict(d_in=32, n_features=96, p_active=0.04),
            n_train=8192 if quick else 32_768, n_test=4096 if quick else 8192,
            kinds=["topk", "snmf"] if quick else list(KINDS), epochs=20 if quick else 10,
            batch_size=256 if quick else 512,
            lr=4e-3),
    }


def _floats(t: Any, digits: int = 5) -> Any:
    """A tensor (or number) as rounded floats for JSON."""
    v = t.tolist() if hasattr(t, "tolist") else t
    if isinstance(v, list):
        return [_floats(e, digits) for e in v]
    return round(float(v), digits) if isinstance(v, float) else v


def _checks(sweep: Any, sens: Any, phase: Any, pent: Any, anti: Any, bench: list[dict[str, Any]],
            n_hidden: int, anti_hidden: int) -> dict[str, dict[str, Any]]:
    """The paper's qualitative claims, each measured: ``{name: {"holds", "measured"}}``."""
    rep, sup, inter = sweep.n_represented.tolist(), sweep.n_superposed.tolist(), sweep.mean_interference
    i1 = phase.relative_importance.log().abs().argmin().item()  # the ratio nearest 1
    grid = phase.regime
    gap_err = (pent.gaps - 360 / len(pent.gaps)).abs().max().item()
    pairs = [p for p, r in zip(anti.n_pairs.tolist(), anti.n_represented.tolist(), strict=True)
             if r == 2 * anti_hidden]
    jac = sens.jacobian_norm
    synth = [r for r in bench if r["data"].startswith("synthetic") and r["kind"] == "topk"
             and r["d_dict"] >= r["true features"]]
    out = {
        "more features represented as sparsity rises": (
            rep[-1] > rep[0], f"{rep[0]} of {sweep.models.W.shape[-1]} dense -> {rep[-1]} at S={sweep.sparsity[-1]:.4g}"),
        "dense model: no superposition, one feature per dimension": (
            sup[0] == 0 and rep[0] <= n_hidden, f"{rep[0]} represented, {sup[0]} superposed, m={n_hidden}"),
        "superposition rises with sparsity": (
            sup[-1] > sup[0] and float(inter[-1]) > float(inter[0]),
            f"superposed {sup[0]} -> {sup[-1]}; mean interference {float(inter[0]):.3f} -> {float(inter[-1]):.3f}"),
        "phase diagram: dense, less important extra feature not represented": (
            int(grid[-1, 0]) == 0, f"regime at density {phase.density[-1]:.3g}, ratio "
                                    f"{phase.relative_importance[0]:.3g}: {_regime(grid[-1, 0])}"),
        "phase diagram: dense, more important extra feature gets the dimension": (
            int(grid[-1, -1]) == 1, f"regime at density {phase.density[-1]:.3g}, ratio "
                                     f"{phase.relative_importance[-1]:.3g}: {_regime(grid[-1, -1])}"),
        "phase diagram: sparse, equal importance -> superposition": (
            int(grid[0, i1]) == 2, f"regime at density {phase.density[0]:.3g}, ratio "
                                    f"{phase.relative_importance[i1]:.3g}: {_regime(grid[0, i1])}"),
        "n=5, m=2, sparse: a regular pentagon": (
            bool((pent.norms > 0.5).all()) and gap_err < 10,
            f"norms {[round(float(n), 2) for n in pent.norms]}, gaps {[round(float(g), 1) for g in pent.gaps]} deg "
            f"(largest deviation from 72: {gap_err:.1f})"),
        "n=2m: every feature in an antipodal pair once all are represented": (
            bool(pairs) and all(p == anti_hidden for p in pairs),
            f"pairs where all {2 * anti_hidden} represented: {pairs or 'none'} (m={anti_hidden})"),
        "adversarial: superposed models more sensitive than the dense one": (
            bool((jac[1:] > jac[0]).all()) and bool((sens.global_bound[1:] > sens.global_bound[0]).all()),
            f"Jacobian norm on typical inputs {float(jac[0]):.3f} dense, {float(jac[1:].min()):.3f} - "
            f"{float(jac[1:].max()):.3f} sparser; over all inputs {float(sens.global_bound[0]):.3f} dense -> "
            f"{float(sens.global_bound[-1]):.3f} at S={sweep.sparsity[-1]:.4g}"),
    }
    if synth:
        out["ground truth: topk recovers the synthetic features"] = (
            synth[0]["MMCS"] > 0.9, f"MMCS {synth[0]['MMCS']:.3f}, matched {synth[0][f'matched >= {MATCH}']:.2f}")
    return {k: {"holds": bool(h), "measured": m} for k, (h, m) in out.items()}


def _regime(code: Any) -> str:
    return REGIMES[int(code)]


def run_toy(out: Path = Path("runs/toy"), quick: bool = False, progress: bool = True,
            threads: int | None = 1) -> dict[str, Any]:
    """Run every toy experiment and the ground-truth benchmark; write the report to ``out``.

    Writes ``report.md``, ``toy.json`` (every number and setting), ``benchmark.csv``,
    ``sparsity.png``, ``norms.png``, ``adversarial.png``, ``phase_diagram.png``,
    ``geometry.png``, ``benchmark.png`` and ``index.html``, each atomically. Returns the
    contents of ``toy.json``. ``quick`` uses the small settings of :func:`toy_settings`
    (about half a minute on 2 CPU cores). Everything runs with ``threads`` intra-op torch
    threads (:func:`saekit.superposition.torch_threads`; ``None`` keeps torch's setting):
    every tensor here is small.
    """
    with torch_threads(threads):
        return _run_toy(Path(out), quick, progress)


def _run_toy(out: Path, quick: bool, progress: bool) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    cfg = toy_settings(quick)
    train = dict(cfg["train"], progress=progress)
    t_start = time.time()
    seconds: dict[str, float] = {}

    t = time.time()
    sw = cfg["sweep"]
    sweep = sp.sparsity_sweep(sw["sparsities"], sw["n_features"], sw["n_hidden"], sw["importance"],
                              n_instances=sw["n_instances"], desc="sparsity sweep", **train)
    sens = sp.adversarial_sensitivity(sweep.models, **cfg["adversarial"])
    seconds["sweep"] = time.time() - t

    t = time.time()
    ph = cfg["phase"]
    phase = sp.phase_diagram(ph["relative_importance"], ph["density"], n_instances=ph["n_instances"],
                             desc="phase diagram", **{**train, "batch_size": ph["batch_size"]})
    seconds["phase diagram"] = time.time() - t

    t = time.time()
    ge = cfg["geometry"]
    geo = sp.train_toy_models(ge["n_features"], ge["n_hidden"], ge["sparsities"], 1.0,
                              n_instances=ge["n_instances"], desc="geometry", **train)
    pent = sp.geometry_of(geo.model(-1))
    an = cfg["antipodal"]
    anti = sp.antipodal_pairs(an["n_hidden"], an["sparsities"], n_instances=an["n_instances"],
                              desc="antipodal pairs", **train)
    seconds["geometry"] = time.time() - t

    t = time.time()
    be = cfg["benchmark"]
    tb = be["toy"]
    bench_model = sp.train_toy_models(tb["n_features"], tb["n_hidden"], [tb["sparsity"]], 1.0,
                                      n_instances=tb["n_instances"], desc="benchmark toy model", **train)
    datasets = [toy_hidden_data(bench_model, 0, be["n_train"], be["n_test"]),
                synthetic_data(**be["synthetic"], n_train=be["n_train"], n_test=be["n_test"])]
    bench = ground_truth_benchmark(datasets, be["kinds"], epochs=be["epochs"], batch_size=be["batch_size"],
                                   lr=be["lr"], progress=progress)
    seconds["benchmark"] = time.time() - t
    seconds["total"] = time.time() - t_start

    sweep_rows = [{"sparsity S": round(float(s), 6), "1-S": round(1 - float(s), 6), "represented": int(r),
                   "superposed": int(u), "mean interference": float(i), "D* (dims per feature)": float(d),
                   "Jacobian norm": float(j), "attack gain": float(a), "bound over all inputs": float(gb),
                   "loss": float(lo)}
                  for s, r, u, i, d, j, a, gb, lo in zip(
                      sweep.sparsity, sweep.n_represented, sweep.n_superposed, sweep.mean_interference,
                      sweep.dims_per_feature, sens.jacobian_norm, sens.attack_gain, sens.global_bound,
                      sweep.models.loss, strict=True)]
    anti_rows = [{"sparsity S": round(float(s), 6), "represented": int(r), "antipodal pairs": int(p),
                  "mean D_i (represented)": float(d[rep].mean()) if rep.any() else 0.0}
                 for s, r, p, d, rep in zip(anti.sparsity, anti.n_represented, anti.n_pairs, anti.dimensionality,
                                            sp.feature_norms(anti.models.W) > sp.REPRESENTED, strict=True)]
    checks = _checks(sweep, sens, phase, pent, anti, bench, sw["n_hidden"], an["n_hidden"])
    bench_rep = int((sp.feature_norms(bench_model.W[0]) > sp.REPRESENTED).sum())
    result = {
        "settings": cfg, "quick": quick, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "thresholds": {"represented": sp.REPRESENTED, "superposed": sp.SUPERPOSED, "matched": MATCH},
        "sparsity_sweep": {"rows": sweep_rows, "feature_norms": _floats(sp.feature_norms(sweep.models.W)),
                           "interference": _floats(sp.interference(sweep.models.W)),
                           "importance": _floats(sweep.models.importance[0])},
        "adversarial": {"epsilon": sens.epsilon, "inputs": sens.n_inputs.tolist(),
                        "jacobian_norm": _floats(sens.jacobian_norm), "attack_gain": _floats(sens.attack_gain),
                        "global_bound": _floats(sens.global_bound)},
        "phase_diagram": {"regimes": list(sp.REGIMES), "relative_importance": _floats(phase.relative_importance),
                          "density": _floats(phase.density), "regime": phase.regime.tolist(),
                          "norms": _floats(phase.norms), "cosine": _floats(phase.cosine)},
        "geometry": {"sparsity": _floats(geo.sparsity), "W": _floats(geo.W), "loss": _floats(geo.loss),
                     "pentagon": {"sparsity": round(float(pent.model.sparsity[0]), 6), "norms": _floats(pent.norms),
                                  "angles": _floats(pent.angles), "gaps": _floats(pent.gaps),
                                  "dimensionality": _floats(pent.dimensionality)}},
        "antipodal": {"n_hidden": an["n_hidden"], "rows": anti_rows, "partner_cosine": _floats(anti.partner_cosine),
                      "dimensionality": _floats(anti.dimensionality)},
        "benchmark": {"rows": bench, "toy_model": {**tb, "represented": bench_rep,
                                                   "loss": float(bench_model.loss[0])}},
        "checks": checks,
    }
    figures = _figures(sweep, sens, phase, geo, bench)
    for name, png in figures.items():
        atomic_write_bytes(out / name, png)

    write_csv(out / "benchmark.csv", bench)
    atomic_write_text(out / "toy.json", json.dumps(result, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / "report.md", _markdown(result, cfg, pent, phase))
    atomic_write_text(out / "index.html", _html(result, figures, pent, phase))
    return result


_REGIME_COLOURS = ("#bbbbbb", "#4c72b0", "#dd8452", "#c44e52")


def _figures(sweep: Any, sens: Any, phase: Any, geo: Any, bench: list[dict[str, Any]]) -> dict[str, bytes]:
    """The report's plots as PNG bytes, by file name."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global backend state
    from matplotlib.patches import Patch

    figs: dict[str, bytes] = {}
    density = (1 - sweep.sparsity).tolist()
    n_features, m = sweep.models.W.shape[-1], sweep.models.W.shape[-2]

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    ax.plot(density, sweep.n_represented.tolist(), "o-", label="represented (‖W_i‖ > 0.5)")
    ax.plot(density, sweep.n_superposed.tolist(), "s-", label="in superposition (interference > 0.1)")
    ax.plot(density, (1 / sweep.dims_per_feature).mul(m).tolist(), ":", color="k", label="‖W‖_F² (= m / D*)")
    ax.axhline(m, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", xlabel="feature density 1 − S", ylabel="features",
           title=f"{n_features} features in {m} dimensions")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    figs["sparsity.png"] = figure_png(fig)

    norms, inter = feature_norms(sweep.models.W), interference(sweep.models.W).clamp(0, 1)
    k = len(norms)
    fig = Figure(figsize=(2.1 * k, 3.6))
    axes = fig.subplots(1, k, sharey=True, squeeze=False)[0]
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for i, ax in enumerate(axes):
        ax.barh(range(n_features), norms[i].tolist(), color=[cmap(float(v)) for v in inter[i]])
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1.3), title=f"1−S = {density[i]:.3g}", xlabel="‖W_i‖")
    axes[0].set(ylabel="feature i (importance decreasing)", yticks=list(range(0, n_features, 5)))
    axes[0].invert_yaxis()
    fig.suptitle("‖W_i‖, coloured by interference Σ_{j≠i}(Ŵ_i·W_j)² (dark 0, yellow ≥ 1)", fontsize=9, y=1.04)
    figs["norms.png"] = figure_png(fig)

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    ax.plot(density, sens.jacobian_norm.tolist(), "o-", label="Jacobian spectral norm (mean)")
    ax.plot(density, sens.attack_gain.tolist(), "s--", label=f"explicit attack ‖Δx′‖/ε, ε = {sens.epsilon:g}")
    ax.plot(density, sens.global_bound.tolist(), "^-", label="over all inputs ‖WᵀW‖₂")
    ax.plot(density, (1 / sweep.dims_per_feature).tolist(), ":", color="k", label="features per dimension 1/D*")
    ax.set(xscale="log", xlabel="feature density 1 − S", ylabel="worst-case output change per unit input",
           title="Adversarial sensitivity")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    figs["adversarial.png"] = figure_png(fig)

    fig = Figure(figsize=(6, 4.6))
    ax = fig.subplots()
    lr, lp = phase.relative_importance.log10(), phase.density.log10()
    ax.pcolormesh(_edges(lr).tolist(), _edges(lp).tolist(), phase.regime.numpy(),
                  cmap=ListedColormap(list(_REGIME_COLOURS)), vmin=-0.5, vmax=3.5)
    ax.set(xlabel="log10 relative importance of the extra feature", ylabel="log10 feature density 1 − S",
           title="Two features, one dimension")
    ax.legend(handles=[Patch(color=c, label=f"extra feature: {r}" if i < 2 else r)
                       for i, (c, r) in enumerate(zip(_REGIME_COLOURS, REGIMES, strict=True))],
              fontsize=7, loc="lower left")
    figs["phase_diagram.png"] = figure_png(fig)

    k = geo.W.shape[0]
    fig = Figure(figsize=(2.3 * k, 2.6))
    axes = fig.subplots(1, k, squeeze=False)[0]
    t = [2 * math.pi * i / 100 for i in range(101)]
    for i, ax in enumerate(axes):
        ax.plot([math.cos(a) for a in t], [math.sin(a) for a in t], color="#dddddd", lw=0.8)
        for j in range(geo.W.shape[-1]):
            x, y = geo.W[i, 0, j].item(), geo.W[i, 1, j].item()
            ax.plot([0, x], [0, y], "-o", color=f"C{j}", ms=3)
        ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", xticks=[], yticks=[],
               title=f"1−S = {1 - float(geo.sparsity[i]):.3g}")
    fig.suptitle(f"{geo.W.shape[-1]} features of equal importance in 2 dimensions (columns of W)", fontsize=9)
    figs["geometry.png"] = figure_png(fig)

    names = list(dict.fromkeys(r["data"] for r in bench))
    fig = Figure(figsize=(5.2 * len(names), 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        rows = [r for r in bench if r["data"] == name]
        pos = list(range(len(rows)))
        for off, key, colour in ((-0.27, "MMCS", "#4c72b0"), (0.0, "signed MMCS", "#55a868"),
                                 (0.27, f"matched >= {MATCH}", "#dd8452")):
            ax.bar([p + off for p in pos], [r[key] for r in rows], 0.27, label=key, color=colour)
        ax.set_xticks(pos, [f"{r['kind']}\n{r['d_dict']}" for r in rows])
        ax.set(ylim=(0, 1.05), title=name)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8, loc="lower left")
    figs["benchmark.png"] = figure_png(fig)
    return figs


def _edges(centres: Any) -> Any:
    """Cell edges around sorted 1-D centres (half-way between, mirrored at the ends)."""
    c = centres.double()
    if len(c) == 1:
        return torch.stack([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return torch.cat([c[:1] - (mid[:1] - c[:1]), mid, c[-1:] + (c[-1:] - mid[-1:])])


_SHORT = {0: "not rep.", 1: "dedicated", 2: "superpos.", 3: "other"}


def _phase_rows(phase: Any) -> list[dict[str, Any]]:
    rows = []
    for i in reversed(range(len(phase.density))):
        row: dict[str, Any] = {"1-S \\ ratio": f"{float(phase.density[i]):.3g}"}
        for j, r in enumerate(phase.relative_importance.tolist()):
            row[f"{r:.3g}"] = _SHORT[int(phase.regime[i, j])]
        rows.append(row)
    return rows


def _findings(result: dict[str, Any]) -> dict[str, str]:
    """What the adversarial and benchmark numbers say, in words (with the numbers)."""
    rows = result["sparsity_sweep"]["rows"]
    jac = [r["Jacobian norm"] for r in rows]
    top = max(range(len(rows)), key=lambda i: jac[i])
    adversarial = (
        f"On typical inputs the sensitivity is {jac[0]:.2f} for the dense model and {min(jac[1:]):.2f} to "
        f"{jac[top]:.2f} for the sparser ones (largest at 1 − S = {rows[top]['1-S']:g}, {jac[-1]:.2f} at the "
        "sparsest)" + (
            ": it does not keep growing with sparsity, because a typical very sparse input has a single feature "
            "present and so few active outputs" if jac[-1] < jac[top] - 0.05 else "")
        + ". Over all inputs the bound grows "
        f"from {rows[0]['bound over all inputs']:.2f} to {rows[-1]['bound over all inputs']:.2f}, following the "
        f"features per dimension 1/D* ({1 / rows[0]['D* (dims per feature)']:.2f} to "
        f"{1 / rows[-1]['D* (dims per feature)']:.2f}), as in the paper's plot of vulnerability against features "
        "per dimension.")
    bench = result["benchmark"]["rows"]
    full = [r for r in bench if r["kind"] != "snmf" and r["d_dict"] >= r["true features"]]
    parts = []
    if full:
        lo, hi = min(full, key=lambda r: r["MMCS"]), max(full, key=lambda r: r["MMCS"])
        dead = max(full, key=lambda r: r["dead"])
        parts.append(f"The SAEs at full width reach MMCS {lo['MMCS']:.3f} ({lo['kind']}, {lo['data']}) to "
                     f"{hi['MMCS']:.3f} ({hi['kind']}, {hi['data']}); the most dead latents: {dead['dead']:.1%} "
                     f"({dead['kind']}, {dead['data']}).")
    for r in bench:
        if r["kind"] != "snmf":
            continue
        control = [c for c in bench if c["data"] == r["data"] and c["kind"] == "topk" and c["d_dict"] == r["d_dict"]]
        text = (f"SNMF on {r['data']} is capped at d_dict = {r['d_dict']} for {r['true features']} true features: "
                f"MMCS {r['MMCS']:.3f}, {r[f'matched >= {MATCH}']:.1%} matched")
        if control:
            c = control[0]
            text += (f"; a topk SAE of the same width reaches MMCS {c['MMCS']:.3f}, {c[f'matched >= {MATCH}']:.1%} "
                     "matched, so " + ("the width cap, more than the factorisation, limits the recovery"
                                       if c["MMCS"] < r["MMCS"] + 0.1 else "the factorisation costs recovery "
                                       "beyond the width cap"))
        parts.append(text + ".")
    return {"adversarial": adversarial, "benchmark": " ".join(parts)}


def _text(result: dict[str, Any], cfg: dict[str, Any], pent: Any) -> dict[str, str]:
    """The prose of the report, shared by the Markdown and the HTML."""
    tr, sw, be = cfg["train"], cfg["sweep"], cfg["benchmark"]
    tm = result["benchmark"]["toy_model"]
    schedule = "decayed to 0 along a cosine" if tr["lr_schedule"] == "cosine" else "constant"
    found = _findings(result)
    return {
        "adversarial_found": found["adversarial"],
        "benchmark_found": found["benchmark"],
        "intro": (
            "The ReLU-output toy model of Elhage et al. (2022), x′ = ReLU(WᵀWx + b), n features in m < n "
            "dimensions, each feature present with probability 1 − S and then uniform on [0, 1]; loss Σ_i I_i "
            "(x_i − x′_i)², averaged over the batch. Every grid of settings trains at once (W of shape "
            "[models, m, n], one Adam). "
            f"Training here: Adam, lr {tr['lr']:g} {schedule}, {tr['steps']:,} steps, batch {tr['batch_size']:,}; "
            "each setting is trained from several initialisations and the one with the lowest held-out loss is "
            "kept (the paper: lr 1e-3, 10k steps, batch 1024). Represented: ‖W_i‖ > 0.5; in superposition: a "
            "represented feature with interference Σ_{j≠i}(Ŵ_i·W_j)² > 0.1. "
            f"Wall time {result['seconds']['total']:.0f} s ({'quick' if result['quick'] else 'full'} settings)."),
        "sweep": (
            f"n = {sw['n_features']} features, m = {sw['n_hidden']} dimensions, importance {sw['importance']}^i, "
            f"{sw['n_instances']} instance(s) per sparsity. D* = m / ‖W‖_F² is dimensions per feature."),
        "adversarial": (
            "On each model's own inputs (those with at least one feature present), the Jacobian of x ↦ x′ is "
            "diag(1[pre-activation > 0]) WᵀW; its spectral norm is the largest first-order output change per unit "
            "input perturbation. The attack column steps ε along the top singular vector and measures the real "
            f"change through the ReLU (ε = {result['adversarial']['epsilon']:g}). A dense model's represented "
            "features are orthogonal (norm about 1); superposition puts other features' weight on each row."),
        "phase": (
            "n = 2, m = 1: feature 1 has importance 1, the extra feature 2 the relative importance on the x axis; "
            "both have the density on the y axis. Regimes: the extra feature not represented (‖W_2‖ ≤ 0.5), "
            "dedicated (it takes the dimension and feature 1 is dropped), superposition (both represented, "
            f"antipodally). Best of {cfg['phase']['n_instances']} instances per cell (with fewer, a cell now and "
            "then keeps a run whose two weights started with the same sign and never crossed 0). At density 1 "
            "and ratio 1 the two features tie and any direction in their plane is optimal, so the cell may be "
            "'other' (both represented on the same side)."),
        "geometry": (
            f"n = 5, m = 2, equal importance. At S = {float(pent.model.sparsity[0]):.3g}: norms "
            f"{', '.join(f'{float(v):.2f}' for v in pent.norms)}; angles between neighbours "
            f"{', '.join(f'{float(v):.1f}°' for v in pent.gaps)} (a regular pentagon: 72°); D_i "
            f"{', '.join(f'{float(v):.2f}' for v in pent.dimensionality)} (pentagon: 0.40)."),
        "antipodal": (
            f"n = 2m = {2 * cfg['antipodal']['n_hidden']} features of equal importance in m = "
            f"{cfg['antipodal']['n_hidden']} dimensions. A pair: two represented features, each the other's most "
            "opposite, at cosine < −0.9 (D_i = 1/2 each). The dense model has no pairs; with equal importances "
            "any m-dimensional projection is optimal, so its norms may spread over more than m features."),
        "benchmark": (
            "Each dictionary kind fitted on data with known features; scored on held-out rows. (a) The hidden "
            f"activations h = Wx of a toy model trained with n = {tm['n_features']}, m = {tm['n_hidden']}, S = "
            f"{tm['sparsity']}, equal importance ({tm['represented']} features represented): the true features "
            "are the represented W_i, directions in the m-dimensional hidden space. (b) synthetic_sparse_data "
            f"({be['synthetic']['n_features']} random unit directions in {be['synthetic']['d_in']} dimensions, "
            f"each firing with p = {be['synthetic']['p_active']}, magnitude uniform on [0.5, 1.5]). "
            f"{be['n_train']:,} rows to fit, {be['n_test']:,} held out. SAEs: d_dict = the number of true features, "
            f"{be['epochs']} epochs, batch {be['batch_size']}, lr {be['lr']:g}, k = round(expected L0) for topk and "
            "batchtopk, l1_coefficient 1 (relu), l0_coefficient 1 (jumprelu). SNMF: wta_fraction = 1.0 (plain "
            "semi-NMF), because the true directions are dense over the hidden dimensions (a toy feature W_i "
            "spreads over all m of them), so keeping a fraction of the dimensions per feature could not express "
            "them; saekit's fit_snmf refuses d_dict above the data's rank, so SNMF gets d_dict = d_in and can match "
            "at most d_in of the true features; its codes keep the top-k per row. MMCS: mean over true features of "
            "the best |cos| (saekit.metrics.recovery); signed MMCS: the best signed cosine, which matters here "
            "because a non-negative code cannot use −W_i for W_i and toy models place features antipodally. "
            "Dead: fraction of dictionary features never active on the held-out rows."),
    }


def _check_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"claim": k, "holds": "yes" if v["holds"] else "NO", "measured": v["measured"]}
            for k, v in result["checks"].items()]


def _markdown(result: dict[str, Any], cfg: dict[str, Any], pent: Any, phase: Any) -> str:
    text = _text(result, cfg, pent)
    bench = [{k: v for k, v in r.items() if k != "seconds"} for r in result["benchmark"]["rows"]]
    parts = [
        "# Toy models of superposition\n", text["intro"] + "\n",
        "Reproduce: `saekit toy --out runs/toy` (`--quick` for the small settings).\n",
        "## What reproduces\n", markdown_table(_check_rows(result)),
        "## Features represented against sparsity\n", text["sweep"] + "\n",
        markdown_table([{k: v for k, v in r.items() if k not in ("Jacobian norm", "attack gain",
                                                                  "bound over all inputs")}
                        for r in result["sparsity_sweep"]["rows"]]),
        "![features against sparsity](sparsity.png)\n", "![feature norms](norms.png)\n",
        "## Superposition and adversarial sensitivity\n", text["adversarial"] + "\n",
        markdown_table([{k: r[k] for k in ("1-S", "represented", "superposed", "D* (dims per feature)",
                                            "Jacobian norm", "attack gain", "bound over all inputs")}
                        for r in result["sparsity_sweep"]["rows"]]),
        text["adversarial_found"] + "\n", "![adversarial sensitivity](adversarial.png)\n",
        "## Phase diagram: two features, one dimension\n", text["phase"] + "\n",
        markdown_table(_phase_rows(phase)), "![phase diagram](phase_diagram.png)\n",
        "## Geometry\n", text["geometry"] + "\n", "![geometry](geometry.png)\n",
        "### Antipodal pairs\n", text["antipodal"] + "\n", markdown_table(result["antipodal"]["rows"]),
        "## Ground truth: every dictionary kind on known features\n", text["benchmark"] + "\n",
        markdown_table(bench), text["benchmark_found"] + "\n", "![recovery](benchmark.png)\n",
    ]
    return "\n".join(parts)


def _html(result: dict[str, Any], figures: dict[str, bytes], pent: Any, phase: Any) -> str:
    text = {k: f"<p>{html.escape(v)}</p>" for k, v in _text(result, result["settings"], pent).items()}
    rows = result["sparsity_sweep"]["rows"]
    return html_page("Toy models of superposition", [
        ("Setting", text["intro"]),
        ("What reproduces", html_table(_check_rows(result))),
        ("Features represented against sparsity", text["sweep"] + html_table(rows) + html_img(
            figures["sparsity.png"], "features against sparsity") + html_img(figures["norms.png"], "feature norms")),
        ("Adversarial sensitivity", text["adversarial"] + text["adversarial_found"]
         + html_img(figures["adversarial.png"], "sensitivity")),
        ("Phase diagram", text["phase"] + html_table(_phase_rows(phase))
         + html_img(figures["phase_diagram.png"], "phase diagram")),
        ("Geometry", text["geometry"] + html_img(figures["geometry.png"], "geometry") + text["antipodal"]
         + html_table(result["antipodal"]["rows"])),
        ("Ground truth benchmark", text["benchmark"] + html_table(result["benchmark"]["rows"])
         + text["benchmark_found"] + html_img(figures["benchmark.png"], "recovery")),
    ])


# --------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``saekit toy`` on the object ``ArgumentParser.add_subparsers()`` returns."""
    p = subparsers.add_parser("toy", help="toy models of superposition: reproduce the paper's results and "
                                          "benchmark every dictionary kind on known features")
    p.add_argument("--out", default="runs/toy", help="report directory (default runs/toy)")
    p.add_argument("--quick", action="store_true", help="small settings (about 30 s), as the tests run")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output directory")
    p.set_defaults(fn=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """``saekit toy``: run the experiments, print the checks and the benchmark, write the report."""
    out = claim_output(args.out, overwrite=args.overwrite, what="toy report")
    result = run_toy(out, quick=args.quick)
    print("\n" + text_table(_check_rows(result)))
    print("\n" + text_table([{k: r[k] for k in ("data", "kind", "d_dict", "MMCS", "signed MMCS",
                                                f"matched >= {MATCH}", "dead", "L0", "FVU")}
                             for r in result["benchmark"]["rows"]]))
    print(f"\nwrote {out / 'report.md'}, toy.json, index.html and PNG plots "
          f"({result['seconds']['total']:.0f} s)")
    return 0
