"""What each column of saekit's tables means: the one source every page and report reads.

A column is explained where it appears: the HTML pages put the explanation in the header
cell's ``title`` (a tooltip) and in a short legend under the table, the Markdown report in
the legend. :func:`explain` looks a column up; score columns prefixed ``random_`` are the
same score for a random description (another feature's), and ``kl_qNN`` a quantile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from saekit.report.stats import MIN_N

_SE = "± one standard error"
_WIN = f"{_SE} over held-out windows (bootstrap); n = windows"

#: Column name -> one sentence (or two) a newcomer can read.
COLUMNS: dict[str, str] = {
    # --- generic
    "metric": "What the number on this row is.",
    "value": "Its value.",
    "stage": "A step of the run.",
    "seconds": "Wall-clock seconds the step took on this machine.",
    "share": "That step's share of the whole run's wall-clock time.",
    "CPU seconds": ("CPU seconds this process spent in the step, all threads: about the wall-clock time "
                    "on an idle core; less than the wall-clock time when other work shares the cores."),
    # --- activations per hook (demo)
    "hook": "Where in the model the activations are read (TransformerLens hook name).",
    "tokens": "Tokens counted (BOS, separators and padding excluded).",
    "d": "Width of the activation vector at this hook.",
    "mean ||x||": "Mean L2 norm of one token's activation vector.",
    "max ||x||": "Largest L2 norm of one token's activation vector.",
    "frac > 0": "Fraction of activation entries above zero (after a ReLU/GELU most are near 0).",
    # --- dictionaries (demo, compare)
    "kind": "Dictionary type: topk = TopK sparse autoencoder, snmf = semi-nonnegative matrix factorisation.",
    "d_dict": "Number of features (dictionary size).",
    "k": "Features active per token: exactly k for TopK; the target for SNMF.",
    "train tokens": "Activation vectors the dictionary was fitted on.",
    "fit seconds": "Wall-clock seconds the fit took on this machine.",
    "FVU": "Fraction of variance unexplained by the reconstruction (0 = perfect, 1 = no better than the mean).",
    "FVU ± SE": f"Fraction of variance unexplained by the reconstruction (0 = perfect), {_WIN}.",
    "FVU SE": "Standard error of FVU over held-out windows (bootstrap).",
    "L0": "Mean number of features active per token.",
    "neurons per feature": "Mean number of non-zero entries in a feature's decoder row (SNMF keeps few).",
    "dead %": "Percent of features that never fire on the held-out text.",
    "CE rec. zero ± SE": ("Cross-entropy recovered: how much of the loss increase from zero-ablating the hook "
                          f"the reconstruction wins back (1 = all, 0 = none), {_WIN}."),
    "CE rec. mean ± SE": f"Cross-entropy recovered against mean-ablating the hook instead, {_WIN}.",
    "KL rec. zero ± SE": f"The same with the KL to the clean next-token distribution instead of the loss, {_WIN}.",
    "CE recovered (zero abl.)": "Cross-entropy recovered against zero ablation (1 = all of the loss won back).",
    "CE recovered (mean abl.)": "Cross-entropy recovered against mean ablation.",
    "KL recovered (zero abl.)": "KL recovered against zero ablation.",
    "windows": "Held-out windows the CE/KL numbers are averaged over.",
    "CE clean / spliced": "Next-token loss (nats) of the model as is / with the reconstruction spliced in.",
    # --- planted concepts (demo)
    "family": "A planted concept family of the demo corpus (its tokens are known), or a family of directions.",
    "best neuron": "The neuron that best separates this family's tokens from all others.",
    "best feature": "The dictionary feature that best separates this family's tokens from all others.",
    "mean on family": "Mean activation of that unit on the family's tokens.",
    "mean elsewhere": "Mean activation of that unit on all other tokens.",
    "AUROC": "How well the best neuron's activation ranks family tokens above others (0.5 = chance, 1 = perfect).",
    "best SAE feature AUROC": "The same AUROC for the best single TopK SAE feature.",
    "best SNMF feature AUROC": "The same AUROC for the best single SNMF feature.",
    "AUROC ± SE": ("How well the best neuron's activation ranks the family's tokens above all others (0.5 = "
                   f"chance, 1 = perfect), {_SE} (Hanley & McNeil 1982); n = the family's tokens."),
    "best SAE feature AUROC ± SE": "The same for the best single TopK SAE feature.",
    "best SNMF feature AUROC ± SE": "The same for the best single SNMF feature.",
    # --- perturbation effects (demo)
    "direction": "Which kind of direction the activations are pushed along.",
    "KL at 0.3 median norms": ("Mean next-token KL (nats per token) after moving every token 0.3 median "
                               "activation norms along such a direction: how much the model cares."),
    "reconstruction KL / cov-mixture KL": ("KL of splicing in the reconstruction over KL of an equally large "
                                           "step along a random cov-mixture direction; below 1 the error is "
                                           "not unusually harmful (Lee & Heimersheim 2024)."),
    "concept log-prob gain at KL 0.25": ("Mean rise in log-probability of a concept's tokens when steering "
                                         "along its direction until the output moves by KL 0.25; higher "
                                         "steers more precisely."),
    # --- interp summary (demo)
    "dictionary": "Which dictionary.",
    "description": ("How the feature's description was made: offline = from top tokens and n-grams; prism = "
                    "PRISM cluster labels (each cluster scored); prism (best of k) = the best label per "
                    "feature; maxact/llm = written by an LLM."),
    "features": "Features with at least one score for this description kind (the n of its scores).",
    "CoSy AUC": ("CoSy score (Kopf et al. 2024): probability that the feature fires more on held-out text "
                 f"matching the description than on random text; 0.5 = chance. Mean over the descriptions scored, {_SE}."),
    "random CoSy AUC": "The same for another feature's description: the bar a real description must clear.",
    "embedding AUROC": ("How well the description's embedding similarity to held-out chunks ranks the "
                        f"chunks where the feature fires above others; 0.5 = chance. Mean over the descriptions "
                        f"scored, {_SE}."),
    "random embedding AUROC": "The same for another feature's description (the baseline).",
    "random emb. AUROC": "The same for another feature's description (the baseline).",
    "n": "Number of items the means on this row are over.",
    # --- interp dashboard (index and feature pages)
    "feature": "The feature's index in the dictionary; click for its page.",
    "frequency": "Fraction of tokens on which the feature fires.",
    "count": "Tokens (or, in a table of top tokens, occurrences of that token) on which the feature fires.",
    "max": "Largest activation seen.",
    "mean": "Mean activation over the tokens where the feature fires.",
    "polysemanticity": ("PRISM's mean pairwise cosine similarity of the feature's cluster labels: near 1 "
                        "the clusters say the same thing (monosemantic); lower, the feature fires on "
                        "unrelated things. Empty with fewer than 2 clusters."),
    "method": "How this description was made (see 'description').",
    "text": "The description.",
    "token": "A token (↵ is a newline, ⇥ a tab).",
    "lift": "P(feature fires | this token) / P(feature fires): how much the token raises the firing rate.",
    "cosy_auc": ("CoSy AUC: probability that the feature fires more on held-out chunks matching the "
                 "description than on random chunks (0.5 = chance, 1 = perfect)."),
    "cosy_mad": ("CoSy MAD: (mean activation on matching chunks − mean on random chunks) / std on random "
                 "chunks; empty when the feature never varies on random chunks."),
    "cosy_p": "One-sided Mann–Whitney p-value that matching chunks activate more than random ones (small = real).",
    "embedding_auroc": ("AUROC of the description's embedding similarity to held-out chunks, chunks where "
                        "the feature fires against others (0.5 = chance)."),
    "llm_cosy_auc": "CoSy AUC on texts an LLM wrote from the description (PRISM's CoSy for text).",
    "llm_cosy_mad": "CoSy MAD on texts an LLM wrote from the description.",
    "detection_balanced_accuracy": ("An LLM, given the description, says which held-out chunks make the "
                                    "feature fire; balanced accuracy, 0.5 = chance (delphi's detection)."),
    "detection_parsed": "Fraction of the detection answers the LLM gave in a readable form.",
    "fuzzing_balanced_accuracy": ("An LLM, given the description, says whether the marked tokens are the "
                                  "ones that fire; balanced accuracy, 0.5 = chance (delphi's fuzzing)."),
    "fuzzing_parsed": "Fraction of the fuzzing answers the LLM gave in a readable form.",
    "intruder_accuracy": "How often an LLM picks the example that does not belong to the feature.",
    "intruder_chance": "The intruder accuracy of guessing.",
    "llm_sizes_level": "How far the prompt sizes were cut to fit the time budget (0 = not at all).",
    # --- LLM answers
    "call": "Which kind of LLM request.",
    "parsed": "Answers in the asked-for format.",
    "salvaged": "Answers read by a fallback parser.",
    "unparseable": "Answers that could not be read; left out of every score.",
    "failed": "Requests with no answer after retries.",
    "skipped": "Requests not made: the time budget was spent.",
    "total": "All requests of this kind.",
    # --- sensitivity
    "experiment": ("curve: KL after pushing every token a distance r along one direction per token; "
                   "pathology: the reconstruction's KL against a step of the same size."),
    "r": "Perturbation size in multiples of the hook's median activation norm (empty for pathology rows).",
    "r_abs": "The perturbation size in the hook's own units (L2).",
    "n_tokens": "Perturbed tokens the KL is averaged over.",
    "n_directions": "Distinct directions used (for a dictionary's features: how many features).",
    "kl_mean": "Mean KL(clean ‖ perturbed) of the next-token distribution, nats per token.",
    "kl_mean_se": "Standard error of kl_mean over windows (bootstrap).",
    "kl_mean ± SE": f"Mean next-token KL(clean ‖ perturbed), nats per token, {_WIN}.",
    "kl_recon": "KL of splicing the dictionary's reconstruction in place of the activation.",
    "kl_ratio": "kl_recon / kl_mean: above 1 the reconstruction error hurts more than a baseline step.",
    "kl_ratio_se": "Standard error of kl_ratio over windows (bootstrap).",
    "kl_ratio ± SE": ("KL of the reconstruction over KL of an equally large step along the baseline family; "
                      f"above 1 the error is unusually harmful, {_WIN}."),
    "n_windows": "Windows the standard errors are computed over.",
}

_QUANTILE = re.compile(r"kl_q(\d\d)$")


def explain(column: str) -> str | None:
    """The explanation of ``column``, or None when saekit does not know it."""
    if column in COLUMNS:
        return COLUMNS[column]
    if column.startswith("random_") and (base := explain(column.removeprefix("random_"))):
        return f"Baseline, another feature's description scored on this feature. {base}"
    if m := _QUANTILE.match(column):
        return f"The {int(m.group(1))}th percentile of the per-token KL."
    return None


def legend(columns: Iterable[str]) -> list[tuple[str, str]]:
    """``(column, explanation)`` for each column that has one, in order, once each."""
    return [(c, e) for c in dict.fromkeys(columns) if (e := explain(c))]


#: The sentence under a table that shows statistics with their n.
STAT_NOTE = (f"Numbers read mean ± one standard error (n = items it is over); under {MIN_N} items "
             "a number is marked and greyed.")
