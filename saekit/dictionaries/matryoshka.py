"""Matryoshka SAEs: nested prefixes of the dictionary, each trained to reconstruct.

Bussmann, Nabeshima, Karvonen & Nanda (2025) and Nabeshima (2024): split the ``d_dict``
latents into groups; prefix ``j`` (the first ``j`` groups) must reconstruct the input
on its own, so the first latents learn general features and later ones refine them,
instead of a specific feature absorbing a general one. Encoding is the base kind's
(``matryoshka_batchtopk``: BatchTopK's batch selection in training and its calibrated
threshold at inference; ``matryoshka_topk``: TopK per token), so every evaluator,
``splice`` and auto-interp see an ordinary SAE; only the training loss differs:

    loss = mean_j ‖x − b_dec − Σ_{i < w_j} codes_i W_dec,i‖² + aux

over the prefix widths ``w_j`` (the running sums of ``group_sizes``; the last is
``d_dict``), each MSE summed over dimensions and averaged over the batch, plus AuxK on
the full reconstruction's residual, as the base kind. Equal weights averaged over the
levels, as dictionary_learning's ``MatryoshkaBatchTopKTrainer`` (``group_weights``
default 1/n): the loss keeps the scale of one MSE, so the learning-rate rule and the
AuxK weight mean what they mean for the base kind. SAELens sums the levels instead; its
``matryoshka_widths`` are our prefix widths.

Saved as the base kind's SAELens architecture (``jumprelu`` with BatchTopK's threshold,
or ``topk``), with ``training_architecture`` and the widths in the metadata, as
SAELens records its Matryoshka SAEs; it loads them as that architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saekit.dictionaries.base import DictionaryConfig, register
from saekit.dictionaries.sae import TopKOptions, TopKSAE, TrainStep, firing_counts, topk_codes
from saekit.dictionaries.thresholded import BatchTopKOptions, BatchTopKSAE


def default_group_sizes(d_dict: int, k: int | None = None) -> list[int]:
    """Groups whose prefixes double: widths d/16, d/8, d/4, d/2, d (Bussmann et al. use
    doubling prefixes; so does dictionary_learning's demo), keeping only prefixes of at
    least ``max(2k, 8)`` latents, so that the smallest level can still hold each token's
    k codes twice over. A tiny dictionary gets one group (a plain SAE)."""
    floor = max(2 * (k or 1), 8)
    widths = [d_dict >> j for j in (4, 3, 2, 1) if (d_dict >> j) >= floor] + [d_dict]
    return [b - a for a, b in zip([0, *widths[:-1]], widths, strict=True)]


def check_group_sizes(sizes: Any, d_dict: int) -> list[int]:
    """``sizes`` as a list of positive ints summing to ``d_dict``, or a ValueError saying so."""
    if not isinstance(sizes, list) or not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"option group_sizes must be a non-empty list of positive integers, got {sizes!r}")
    if sum(sizes) != d_dict:
        raise ValueError(f"option group_sizes {sizes} sums to {sum(sizes)}, but d_dict is {d_dict}")
    return sizes


class MatryoshkaMixin:
    """The nested loss, shared by both Matryoshka kinds (a mixin before the base kind)."""

    cfg: DictionaryConfig
    W_dec: Tensor
    b_dec: Tensor

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)  # type: ignore[call-arg]
        sizes = cfg.options.get("group_sizes") or default_group_sizes(cfg.d_dict, cfg.k)
        cfg.options["group_sizes"] = check_group_sizes(sizes, cfg.d_dict)

    @property
    def widths(self) -> list[int]:
        """The prefix widths (SAELens' ``matryoshka_widths``)."""
        out, total = [], 0
        for s in self.cfg.options["group_sizes"]:
            total += s
            out.append(total)
        return out

    def nested_mse(self, x: Tensor, codes: Tensor, skip: Tensor | None = None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``(mean of the prefix MSEs, full reconstruction, each prefix's MSE)`` against ``x``
        (the target); ``skip``, a skip transcoder's skip term, is part of every prefix."""
        x_hat = self.b_dec.expand_as(x) if skip is None else self.b_dec + skip
        levels, start = [], 0
        for w in self.widths:
            x_hat = x_hat + codes[:, start:w] @ self.W_dec[start:w]
            levels.append((x - x_hat).pow(2).sum(-1).mean())
            start = w
        return torch.stack(levels).mean(), x_hat, levels

    def nested_step(self, x: Tensor, pre: Tensor, codes: Tensor, dead: Tensor | None,
                    target: Tensor | None = None) -> TrainStep:
        y = self._target(x, target)  # type: ignore[attr-defined]
        loss, x_hat, levels = self.nested_mse(y, codes, self.skip_term(x))  # type: ignore[attr-defined]
        aux = self.aux_loss(y, x_hat, pre, dead)  # type: ignore[attr-defined]
        return TrainStep(loss + aux, x_hat, firing_counts(codes),
                         {"mse": levels[-1].detach(), "nested_mse": loss.detach(),
                          "first_level_mse": levels[0].detach(), "sparsity": torch.zeros(()), "aux": aux.detach()})

    def saelens_config(self) -> dict[str, Any]:
        cfg = super().saelens_config()  # type: ignore[misc]
        details = {"k": self.cfg.k, "matryoshka_widths": self.widths}
        cfg["metadata"] = {**cfg.get("metadata", {}), "training_architecture": self.cfg.kind,
                           "training_architecture_details": details}
        return cfg


@dataclass
class MatryoshkaTopKOptions(TopKOptions):
    """Options of kind ``matryoshka_topk``."""

    group_sizes: list[int] | None = None
    """Sizes of the nested groups, summing to d_dict (default: :func:`default_group_sizes`)."""


@dataclass
class MatryoshkaBatchTopKOptions(BatchTopKOptions):
    """Options of kind ``matryoshka_batchtopk``."""

    group_sizes: list[int] | None = None
    """Sizes of the nested groups, summing to d_dict (default: :func:`default_group_sizes`)."""


@register("matryoshka_topk")
class MatryoshkaTopKSAE(MatryoshkaMixin, TopKSAE):
    """TopK per token, trained with the nested loss (module docstring)."""

    Options = MatryoshkaTopKOptions

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None,
                   target: Tensor | None = None) -> TrainStep:
        pre = self.pre_acts(x)
        return self.nested_step(x, pre, topk_codes(pre, self.cfg.k), dead, target)


@register("matryoshka_batchtopk")
class MatryoshkaBatchTopKSAE(MatryoshkaMixin, BatchTopKSAE):
    """BatchTopK, trained with the nested loss (module docstring)."""

    Options = MatryoshkaBatchTopKOptions

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None,
                   target: Tensor | None = None) -> TrainStep:
        pre = self.pre_acts(x)
        return self.nested_step(x, pre, self.batch_codes(pre, step), dead, target)
