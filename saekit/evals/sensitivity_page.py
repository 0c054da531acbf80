"""The sensitivity result's page (:mod:`saekit.evals.sensitivity`): it opens with what is
measured and how to read it, then the KL per kind of direction and the pathology ratios,
each number with its standard error and n (windows), then the plots and every row."""

from __future__ import annotations

from typing import Any

from saekit.report import Section, Stat


def intro(hook: str, radius_unit: str, median_norm: float) -> str:
    """The sentence the page opens with: what is measured, and how to read it."""
    unit = "× the median activation norm" if radius_unit == "median_norm" else "in the hook's L2 units"
    return (f"What is measured: how much the model's next-token distribution changes (KL divergence, nats "
            f"per token) when every token's activation at {hook} is pushed a distance r ({unit}; "
            f"median norm {median_norm:.3g}) along one direction, for random baseline directions "
            "and for dictionary features. How to read it: at the same r, a higher KL means the model is "
            "more sensitive to that kind of direction; feature directions that move the output more than "
            "random ones are directions the model reads. The error-pathology test splices in each "
            "dictionary's reconstruction and compares its KL with an equally long step along a baseline "
            "direction: a ratio above 1 means the reconstruction error hurts more than an ordinary step "
            "of its size (Gurnee 2024), about 1 or below that it does not (Lee & Heimersheim 2024).")


def readable_tables(rows: list[dict], ref: float) -> dict[str, list[dict]]:
    """The page's two short tables, each number a :class:`~saekit.report.Stat` with its n
    (windows): the KL per kind of direction at the reference radius ``ref``, and the
    pathology ratios."""
    at_ref = [{"family": r["family"], "dictionary": r["dictionary"] or None, "n_directions": r["n_directions"],
               "kl_mean ± SE": Stat(r["kl_mean"], r["kl_mean_se"], r["n_windows"])}
              for r in rows if r["experiment"] == "curve" and r["r"] == ref]
    path = [{"dictionary": r["dictionary"], "family": r["family"], "r_abs": r["r_abs"], "kl_recon": r["kl_recon"],
             "kl_mean": r["kl_mean"], "kl_ratio ± SE": Stat(r["kl_ratio"], r["kl_ratio_se"], r["n_windows"])}
            for r in rows if r["experiment"] == "pathology"]
    return {k: v for k, v in (("at_reference_radius", at_ref), ("pathology", path)) if v}


def page_sections(hook: str, radius_unit: str, summary: dict[str, Any], tables: dict,
                  figures: dict) -> tuple[Section, ...]:
    """The page's parts: what it shows, the two short tables, the plots, every row."""
    ref = summary["reference_radius"]
    out = [Section("What this page shows", intro(hook, radius_unit, summary["median_norm"]))]
    if "at_reference_radius" in tables:
        out.append(Section(f"Mean KL per kind of direction at r = {ref:g}", "Baseline families have no "
                           "dictionary; a dictionary's rows push along its feature directions.",
                           "at_reference_radius"))
    if "pathology" in tables:
        out.append(Section("Error pathology: the reconstruction against a step of the same size", "r_abs is "
                           "the mean length of the reconstruction error, the step's length.", "pathology"))
    if figures:
        out.append(Section("Plots", "Left: mean KL against r per family (dashed: a dictionary's features); "
                           "right: the same over the isotropic family's KL.", figures=tuple(figures)))
    out.append(Section("Every measurement", "One row per experiment, family, dictionary and r "
                       "(sensitivity.csv holds the same).", "sensitivity"))
    return tuple(out)
