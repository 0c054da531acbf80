"""The toy report's ground truth for transcoders and Matryoshka SAEs: a known sparse map
(:mod:`saekit.ground_truth_transcoder`) and a known feature hierarchy
(:mod:`saekit.ground_truth_hierarchy`), their tables, checks and words."""

from __future__ import annotations

from typing import Any

from saekit.ground_truth import MATCH
from saekit.ground_truth_hierarchy import (
    hierarchical_sparse_data,
    hierarchy_benchmark,
    mean_over_seeds,
    split_rows,
)
from saekit.ground_truth_transcoder import chance_mmcs, synthetic_sparse_map, transcoder_benchmark
from saekit.report import Section

#: Columns of the transcoder table and of the hierarchy tables in the report.
TRANSCODER_COLUMNS = ("kind", "variant", "d_dict", "k", "output MMCS", f"output matched >= {MATCH}",
                      "decoder-input MMCS", "input MMCS", "selectivity", "FVU", "L0", "dead")
HIERARCHY_COLUMNS = ("kind", "seeds", "absorption", "parent missed", "child-parent cos", "MMCS",
                     f"matched >= {MATCH}", "parents MMCS", "level-2 parent MMCS", "children under parent",
                     "FVU", "L0", "dead")
HIERARCHY_SEED_COLUMNS = ("kind", "seed", "settings", "absorption", "parent missed", "child-parent cos", "MMCS",
                          "level-2 parent MMCS", "children under parent", "FVU", "L0")


def settings(quick: bool) -> dict[str, Any]:
    """The settings of both parts (``quick``: the test-sized ones); rows, epochs, batch
    and lr are the ground-truth benchmark's."""
    return {
        "transcoder": dict(map=dict(d_in=32, d_out=32, n_features=64, p_active=0.06),
                           kinds=["topk"] if quick else ["topk", "batchtopk"]),
        "hierarchy": dict(toy=dict(n_parents=3, n_children=3, n_independent=8, p_parent=0.15, p_child=0.2,
                                   p_independent=0.05),
                          kinds=["batchtopk", "matryoshka_batchtopk", "snmf"], seeds=[0] if quick else [0, 1, 2]),
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Both benchmarks with ``cfg`` (:func:`saekit.toy_report.toy_settings`): ``{"transcoder":
    rows, "transcoder_chance": input and output MMCS of random directions, "hierarchy":
    rows per seed, "hierarchy_mean": rows per kind}``."""
    be, tc, hi = cfg["benchmark"], cfg["architectures"]["transcoder"], cfg["architectures"]["hierarchy"]
    fit_kw = dict(epochs=be["epochs"], batch_size=be["batch_size"], lr=be["lr"])
    n = be["n_train"] + be["n_test"]
    sparse_map = synthetic_sparse_map(n, **tc["map"], seed=0)
    train = sparse_map._replace(x=sparse_map.x[:be["n_train"]], y=sparse_map.y[:be["n_train"]],
                                codes=sparse_map.codes[:be["n_train"]])
    test = sparse_map._replace(x=sparse_map.x[be["n_train"]:], y=sparse_map.y[be["n_train"]:],
                               codes=sparse_map.codes[be["n_train"]:])
    tc_rows = transcoder_benchmark(train, test, tc["kinds"], **fit_kw)
    nf = tc["map"]["n_features"]
    chance = {"input MMCS": chance_mmcs(nf, nf, tc["map"]["d_in"]),
              "output MMCS": chance_mmcs(nf, nf, tc["map"]["d_out"])}
    h_train, h_test = split_rows(hierarchical_sparse_data(n, **hi["toy"], seed=0), be["n_train"])
    h_rows = hierarchy_benchmark(h_train, h_test, hi["kinds"], seeds=hi["seeds"], **fit_kw)
    return {"transcoder": tc_rows, "transcoder_chance": chance, "hierarchy": h_rows,
            "hierarchy_mean": mean_over_seeds(h_rows), "hierarchy_l0": h_train.expected_l0}


def checks(parts: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """The claims of both parts, measured: ``{claim: (holds, measured)}``."""
    out: dict[str, tuple[bool, str]] = {}
    tc = {(r["kind"], r["variant"]): r for r in parts["transcoder"]}
    chance = parts["transcoder_chance"]
    if ("topk", "transcoder") in tc:
        r = tc["topk", "transcoder"]
        out["transcoder: decoder rows recover the output directions"] = (
            r["output MMCS"] > 0.9, f"topk transcoder output MMCS {r['output MMCS']:.3f} (random directions: "
                                    f"{chance['output MMCS']:.3f})")
        out["transcoder: encoder columns point at the input directions, above chance"] = (
            r["input MMCS"] > chance["input MMCS"] + 0.1,
            f"input MMCS {r['input MMCS']:.3f}, selectivity {r['selectivity']:.3f} (random directions: "
            f"{chance['input MMCS']:.3f})")
    mean = {r["kind"]: r for r in parts["hierarchy_mean"]}
    if "batchtopk" in mean and "matryoshka_batchtopk" in mean:
        b, m = mean["batchtopk"], mean["matryoshka_batchtopk"]
        out["hierarchy: Matryoshka BatchTopK absorbs less than BatchTopK"] = (
            m["absorption"] < b["absorption"],
            f"absorption {m['absorption']:.3f} vs {b['absorption']:.3f}; child-parent cos "
            f"{m['child-parent cos']:.3f} vs {b['child-parent cos']:.3f} (mean of {b['seeds']} seed(s))")
    return out


def findings(parts: dict[str, Any]) -> dict[str, str]:
    """What the two tables say, in words, with their numbers."""
    words = []
    for kind in dict.fromkeys(r["kind"] for r in parts["transcoder"]):
        by = {r["variant"]: r for r in parts["transcoder"] if r["kind"] == kind}
        tc, skip, sae = by["transcoder"], by["skip transcoder"], by["SAE on x"]
        words.append(
            f"{kind}: the transcoder's decoder reaches output MMCS {tc['output MMCS']:.3f} "
            f"({tc[f'output matched >= {MATCH}']:.0%} matched) and its encoder input MMCS {tc['input MMCS']:.3f} "
            f"(the SAE on x: {sae['input MMCS']:.3f}; its decoder {sae['decoder-input MMCS']:.3f} on the input "
            f"directions); the skip transcoder predicts y better (FVU {skip['FVU']:.3f} against "
            f"{tc['FVU']:.3f}) but its decoder matches the output directions less (output MMCS "
            f"{skip['output MMCS']:.3f}): its skip term takes the part of y that is linear in x, and the latents "
            "write what is left, not the e_i.")
    transcoder = " ".join(words)
    mean = {r["kind"]: r for r in parts["hierarchy_mean"]}
    parts_h = [f"{kind}: absorption {r['absorption']:.3f}, child-parent cos {r['child-parent cos']:.3f}, "
               f"MMCS {r['MMCS']:.3f}" for kind, r in mean.items()]
    hierarchy = ("Means over seeds — " + "; ".join(parts_h) + ". Per seed the absorption is coarse (each pair "
                 "is mostly absorbed or not), so compare means over several seeds.")
    if "snmf" in mean:
        s = mean["snmf"]
        hierarchy += (f" SNMF's level 2 recovers the parents at MMCS {s['level-2 parent MMCS']:.3f}, and "
                      f"{s['children under parent']:.0%} of the children's level-1 features sit under the "
                      "level-2 feature of their parent.")
    return {"transcoder": transcoder, "hierarchy": hierarchy}


def prose(parts: dict[str, Any], cfg: dict[str, Any]) -> dict[str, str]:
    """The description of both settings."""
    be, tc, hi = cfg["benchmark"], cfg["architectures"]["transcoder"], cfg["architectures"]["hierarchy"]
    m, t = tc["map"], hi["toy"]
    chance = parts["transcoder_chance"]
    return {
        "transcoder": (
            f"A known sparse map: {m['n_features']} features, each firing with p = {m['p_active']} and magnitude "
            f"uniform on [0.5, 1.5], read random unit input directions d_i in {m['d_in']} dimensions (x = "
            f"Σ a_i d_i, in superposition) and write random unit output directions e_i in {m['d_out']} dimensions "
            "(y = Σ a_i e_i), so y is not a linear function of x. Fitted per kind: a transcoder x → y, a skip "
            "transcoder (plus an affine skip term) and an SAE on x, with d_dict = the number of features, k = "
            f"round(expected L0), {be['epochs']} epochs of {be['n_train']:,} rows, batch {be['batch_size']}, lr "
            f"{be['lr']:g}; scored on {be['n_test']:,} held-out rows. Output MMCS: decoder rows against the e_i; "
            "input MMCS: encoder columns against the d_i (in superposition an encoder must also cancel the other "
            "features' interference, so even an SAE's encoder stays well below 1); selectivity: mean over "
            "features of the correlation between a feature's code and the code of the latent whose decoder "
            f"matches it. Random directions reach input MMCS {chance['input MMCS']:.3f} and output MMCS "
            f"{chance['output MMCS']:.3f}."),
        "hierarchy": (
            f"Nabeshima's (2024) Matryoshka toy: {t['n_parents']} parents (p = {t['p_parent']}), each with "
            f"{t['n_children']} children that fire only with their parent and never together (each with p = "
            f"{t['p_child']} given the parent), and {t['n_independent']} independent features (p = "
            f"{t['p_independent']}); binary magnitudes, orthogonal directions in as many dimensions as features "
            f"(expected L0 {parts['hierarchy_l0']:.2f}). BatchTopK and Matryoshka BatchTopK: d_dict = the number "
            f"of features, k = round(L0), saekit's default group sizes, {be['epochs']} epochs; seeds "
            f"{hi['seeds']}. SNMF: saekit.hierarchy.fit_hierarchy with ranks [features, parents + independent], "
            "wta_fraction 1.0, no top-k (with k = 1 the top-k would silence the parent on every parent + child "
            "token whatever the dictionary). Each true feature gets its latent by one-to-one matching of decoder "
            "rows; over the tokens where a child is active, absorption is the fraction where the parent's latent "
            "is silent while the child's fires (parent missed: silent, whatever the child's does); child-parent "
            "cos is the cosine of the child latent's decoder row with the parent direction (0 for a pure child, "
            "0.71 for parent + child). Level-2 parent MMCS: SNMF's coarse level against the parent directions; "
            "children under parent: pairs whose child's level-1 feature is linked to the parent's level-2 "
            "feature."),
    }


def sections(parts: dict[str, Any], cfg: dict[str, Any]) -> tuple[Section, ...]:
    """The report's two sections."""
    t, found = prose(parts, cfg), findings(parts)
    return (
        Section("Ground truth: transcoders on a known sparse map", t["transcoder"] + "\n\n" + found["transcoder"],
                "transcoder", TRANSCODER_COLUMNS),
        Section("Ground truth: absorption in a feature hierarchy (Matryoshka)", t["hierarchy"] + "\n\n"
                + found["hierarchy"], "hierarchy_mean", HIERARCHY_COLUMNS),
        Section("Absorption per seed", "", "hierarchy", HIERARCHY_SEED_COLUMNS),
    )
