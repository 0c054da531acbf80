"""The toy report's words: the prose of each section with its numbers, the findings,
and the sections of the :class:`~saekit.report.Result` that :func:`saekit.toy_report.run_toy`
returns."""

from __future__ import annotations

from typing import Any

from saekit.ground_truth import MATCH
from saekit.report import Section

_SHORT = {0: "not rep.", 1: "dedicated", 2: "superpos.", 3: "other"}


def phase_rows(phase: Any) -> list[dict[str, Any]]:
    rows = []
    for i in reversed(range(len(phase.density))):
        row: dict[str, Any] = {"1-S \\ ratio": f"{float(phase.density[i]):.3g}"}
        for j, r in enumerate(phase.relative_importance.tolist()):
            row[f"{r:.3g}"] = _SHORT[int(phase.regime[i, j])]
        rows.append(row)
    return rows


def findings(result: dict[str, Any]) -> dict[str, str]:
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


def prose(result: dict[str, Any], cfg: dict[str, Any], pent: Any) -> dict[str, str]:
    """The prose of the report, shared by the Markdown and the HTML."""
    tr, sw, be = cfg["train"], cfg["sweep"], cfg["benchmark"]
    tm = result["benchmark"]["toy_model"]
    schedule = "decayed to 0 along a cosine" if tr["lr_schedule"] == "cosine" else "constant"
    found = findings(result)
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


def check_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"claim": k, "holds": "yes" if v["holds"] else "NO", "measured": v["measured"]}
            for k, v in result["checks"].items()]



#: The sweep table's columns in the section on represented features, and in the one on sensitivity.
_SWEEP = ("sparsity S", "1-S", "represented", "superposed", "mean interference", "D* (dims per feature)", "loss")
_SENSITIVITY = ("1-S", "represented", "superposed", "D* (dims per feature)", "Jacobian norm", "attack gain",
                "bound over all inputs")


def sections(result: dict[str, Any], cfg: dict[str, Any], pent: Any, bench_columns: tuple[str, ...]) -> tuple:
    """The report's sections, in the order a person reads them."""
    t = prose(result, cfg, pent)
    return (
        Section("Setting", t["intro"] + "\n\nReproduce: `saekit toy --out runs/toy` (`--quick` for the small "
                "settings)."),
        Section("What reproduces", table="checks"),
        Section("Features represented against sparsity", t["sweep"], "sparsity_sweep", _SWEEP,
                ("sparsity.png", "norms.png")),
        Section("Superposition and adversarial sensitivity", t["adversarial"] + "\n\n" + t["adversarial_found"],
                "sparsity_sweep", _SENSITIVITY, ("adversarial.png",)),
        Section("Phase diagram: two features, one dimension", t["phase"], "phase_diagram",
                figures=("phase_diagram.png",)),
        Section("Geometry", t["geometry"], figures=("geometry.png",)),
        Section("Antipodal pairs", t["antipodal"], "antipodal"),
        Section("Ground truth: every dictionary kind on known features", t["benchmark"] + "\n\n"
                + t["benchmark_found"], "toy", bench_columns, ("benchmark.png",)),
    )
