"""``saekit toy``: reproduce the toy models of superposition and use them as ground truth.

:func:`run_toy` trains the experiments of :mod:`saekit.superposition` (features
represented against sparsity, the two-feature phase diagram, the pentagon, antipodal
pairs, adversarial sensitivity), then :func:`saekit.ground_truth.ground_truth_benchmark`
fits every dictionary kind on data whose features are known: the hidden activations ``h = W x``
of a trained toy model (true features: the columns ``W_i`` of its represented
features) and :func:`saekit.toy.synthetic_sparse_data`; then the ground truth of the
other architectures (:mod:`saekit.toy_report.architectures`): transcoders on a known
sparse map (:mod:`saekit.ground_truth_transcoder`) and absorption in a feature hierarchy
for BatchTopK, Matryoshka BatchTopK and recursive SNMF
(:mod:`saekit.ground_truth_hierarchy`). It returns a
:class:`~saekit.report.Result` named ``toy``; ``result.save(dir)`` writes ``report.md``,
``toy.json`` (every number), ``toy.csv`` (the benchmark) and the other tables' CSVs, PNG
plots and ``index.html``. The plots are in :mod:`saekit.toy_report.figures`, the words in
:mod:`saekit.toy_report.text`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import saekit.superposition as sp
import saekit.superposition_experiments as spx
from saekit.config import load_config
from saekit.ground_truth import (
    KINDS,
    MATCH,
    ground_truth_benchmark,
    synthetic_data,
    toy_hidden_data,
)
from saekit.jobs import claim_output
from saekit.report import Result, text_table
from saekit.schema import add_config_arguments, add_config_file_arguments, given_overrides
from saekit.superposition import REGIMES, torch_threads
from saekit.toy_report import architectures
from saekit.toy_report.figures import figures
from saekit.toy_report.text import check_rows, phase_rows, sections

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
        "architectures": architectures.settings(quick),
    }


def _floats(t: Any, digits: int = 5) -> Any:
    """A tensor (or number) as rounded floats for JSON."""
    v = t.tolist() if hasattr(t, "tolist") else t
    if isinstance(v, list):
        return [_floats(e, digits) for e in v]
    return round(float(v), digits) if isinstance(v, float) else v


def _checks(sweep: Any, sens: Any, phase: Any, pent: Any, anti: Any, bench: list[dict[str, Any]],
            n_hidden: int, anti_hidden: int, arch: dict[str, Any]) -> dict[str, dict[str, Any]]:
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
    out.update(architectures.checks(arch))
    return {k: {"holds": bool(h), "measured": m} for k, (h, m) in out.items()}


def _regime(code: Any) -> str:
    return REGIMES[int(code)]


@dataclass
class ToyConfig:
    """One ``saekit toy`` run."""

    quick: bool = False
    """Small settings (about 30 s on 2 CPU cores), as the tests run them (:func:`toy_settings`)."""
    threads: int | None = 1
    """Intra-op torch threads (every tensor here is small); None keeps torch's setting."""

    RANGES = {"threads": (1, None)}


def run_toy(config: ToyConfig | str | Path | None = None, out: str | Path | None = None,
            overrides: list[str] | None = None, *, quick: bool | None = None, progress: bool = True,
            threads: Any = ..., overwrite: bool = False) -> Result:
    """Run every toy experiment and the ground-truth benchmark; return the result.

    ``config`` is a :class:`ToyConfig`, a TOML file of its fields, or None (the
    defaults); ``overrides`` (``key=value``), then ``quick`` and ``threads`` when given
    (``threads=None`` keeps torch's setting), apply after it. With ``out``, the directory is claimed before any work (refused when
    it holds an earlier report, unless ``overwrite``) and the result saved there, as
    ``saekit toy`` does. For the earlier signature, whose first parameter was ``out``, a
    path that is not a ``.toml`` file is taken as ``out``.

    The :class:`~saekit.report.Result` is named ``toy``: ``rows`` the benchmark (one row
    per data set and kind), ``tables`` ``sparsity_sweep``, ``antipodal``,
    ``phase_diagram``, ``transcoder`` (both sides of a known sparse map),
    ``hierarchy`` and ``hierarchy_mean`` (absorption per seed and its mean per kind)
    and ``checks`` (each of the paper's claims, and the architectures', measured), ``summary``
    the checks and the seconds per part, ``config`` every setting, ``data`` the curves and
    weights (feature norms, interference, the phase grid, the pentagon), and the plots
    ``sparsity.png``, ``norms.png``, ``adversarial.png``, ``phase_diagram.png``,
    ``geometry.png``, ``benchmark.png``. ``quick`` uses the small settings of
    :func:`toy_settings` (about half a minute on 2 CPU cores). Everything runs with
    ``threads`` intra-op torch threads (:func:`saekit.superposition.torch_threads`;
    ``None`` keeps torch's setting): every tensor here is small.

    """
    if isinstance(config, (str, Path)) and Path(config).suffix != ".toml" and out is None:
        config, out = None, config  # the earlier run_toy(out)
    cfg = load_config(config, overrides, cls=ToyConfig)
    given = {k: v for k, v in (("quick", quick), ("threads", threads)) if v is not (None if k == "quick" else ...)}
    if given:
        cfg = load_config(dataclasses.replace(cfg, **given), cls=ToyConfig)  # checked like the rest
    if out is not None:
        claim_output(out, overwrite=overwrite, what="toy report")
    with torch_threads(cfg.threads):
        result = _run_toy(cfg.quick, progress)
    if out is not None:
        result.save(out)
    return result


def _run_toy(quick: bool, progress: bool) -> Result:
    cfg = toy_settings(quick)
    train = dict(cfg["train"], progress=progress)
    t_start = time.time()
    seconds: dict[str, float] = {}

    t = time.time()
    sw = cfg["sweep"]
    sweep = spx.sparsity_sweep(sw["sparsities"], sw["n_features"], sw["n_hidden"], sw["importance"],
                              n_instances=sw["n_instances"], desc="sparsity sweep", **train)
    sens = sp.adversarial_sensitivity(sweep.models, **cfg["adversarial"])
    seconds["sweep"] = time.time() - t

    t = time.time()
    ph = cfg["phase"]
    phase = spx.phase_diagram(ph["relative_importance"], ph["density"], n_instances=ph["n_instances"],
                             desc="phase diagram", **{**train, "batch_size": ph["batch_size"]})
    seconds["phase diagram"] = time.time() - t

    t = time.time()
    ge = cfg["geometry"]
    geo = sp.train_toy_models(ge["n_features"], ge["n_hidden"], ge["sparsities"], 1.0,
                              n_instances=ge["n_instances"], desc="geometry", **train)
    pent = spx.geometry_of(geo.model(-1))
    an = cfg["antipodal"]
    anti = spx.antipodal_pairs(an["n_hidden"], an["sparsities"], n_instances=an["n_instances"],
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

    t = time.time()
    arch = architectures.run(cfg)
    seconds["transcoders and hierarchy"] = time.time() - t
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
    checks = _checks(sweep, sens, phase, pent, anti, bench, sw["n_hidden"], an["n_hidden"], arch)
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
        "architectures": arch,
        "checks": checks,
    }
    bench_columns = tuple(k for k in dict.fromkeys(k for r in bench for k in r) if k != "seconds")
    summary = {"checks_holding": sum(c["holds"] for c in checks.values()), "checks": checks,
               "seconds": result["seconds"]}
    config = {"settings": cfg, "quick": quick, "thresholds": result["thresholds"]}
    tables = {"sparsity_sweep": sweep_rows, "antipodal": anti_rows, "phase_diagram": phase_rows(phase),
              "checks": check_rows(result), "transcoder": arch["transcoder"], "hierarchy": arch["hierarchy"],
              "hierarchy_mean": arch["hierarchy_mean"]}
    data = {"sparsity_sweep": {k: v for k, v in result["sparsity_sweep"].items() if k != "rows"},
            "adversarial": result["adversarial"], "phase_diagram": result["phase_diagram"],
            "geometry": result["geometry"],
            "antipodal": {k: v for k, v in result["antipodal"].items() if k != "rows"},
            "benchmark": {"toy_model": result["benchmark"]["toy_model"]},
            "architectures": {"transcoder_chance": arch["transcoder_chance"], "hierarchy_l0": arch["hierarchy_l0"]}}
    return Result("toy", bench, summary, config, figures(sweep, sens, phase, geo, bench), tables=tables,
                  sections=sections(result, cfg, pent, bench_columns) + architectures.sections(arch, cfg),
                  title="Toy models of superposition",
                  data=data)

# --------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``saekit toy`` on the object ``ArgumentParser.add_subparsers()`` returns."""
    p = subparsers.add_parser("toy", help="toy models of superposition: reproduce the paper's results and "
                                          "benchmark every dictionary kind on known features")
    add_config_arguments(p, ToyConfig)
    add_config_file_arguments(p)
    p.add_argument("--out", default="runs/toy", help="report directory (default runs/toy)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in the output directory")
    p.set_defaults(fn=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """``saekit toy``: :func:`run_toy` with the flags as overrides; print the checks and the benchmark."""
    result = run_toy(args.config, args.out, given_overrides(ToyConfig, args) + args.set, overwrite=args.overwrite)
    out = Path(args.out)
    print("\n" + text_table(result.tables["checks"]))
    print("\n" + text_table([{k: r[k] for k in ("data", "kind", "d_dict", "MMCS", "signed MMCS",
                                                f"matched >= {MATCH}", "dead", "L0", "FVU")}
                             for r in result.rows]))
    for name, columns in (("transcoder", architectures.TRANSCODER_COLUMNS),
                          ("hierarchy_mean", architectures.HIERARCHY_COLUMNS)):
        print("\n" + text_table([{k: r.get(k) for k in columns} for r in result.tables[name]]))
    print(f"\nwrote {out / 'report.md'}, toy.json, toy.csv (the benchmark), index.html and PNG plots "
          f"({result.summary['seconds']['total']:.0f} s)")
    return 0
