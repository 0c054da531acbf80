"""Sparse autoencoders: ``relu`` (L1), ``topk``, ``batchtopk`` and ``jumprelu``.

All four share ``codes = σ((x − b_dec) W_enc + b_enc)`` and ``x̂ = codes W_dec + b_dec``
(SAELens orientation: ``W_enc [d_in, d_dict]``, ``W_dec [d_dict, d_in]``) and differ in
σ and in the sparsity term of the loss.

The loss convention (one for all kinds, pinned by ``tests/test_sae.py``)
-------------------------------------------------------------------------
Training sees inputs scaled so that E‖x − x̄‖² = d_in (``input_norm="scalar"``), and

    loss = mse + sparsity + aux

- ``mse``: ‖x − x̂‖² summed over the d_in dimensions, averaged over the batch
  (SAELens' convention, so its coefficients transfer);
- ``sparsity``: ``relu``: ``l1_coefficient · mean_batch Σ_i codes_i ‖W_dec,i‖``
  (Anthropic's April-2024 update, as SAELens), warmed up linearly over
  ``l1_warmup_steps``; ``jumprelu``: ``l0_coefficient · mean_batch L0`` or, with
  ``target_l0``, ``l0_coefficient · (L0 / target_l0 − 1)²`` (dictionary_learning);
  ``topk``/``batchtopk``: none (k fixes the sparsity);
- ``aux`` (``topk``, ``batchtopk``): AuxK as SAELens: the k_aux = ``aux_k`` (default
  d_in/2) largest pre-activations among dead features reconstruct the detached
  residual x − x̂; ``aux_coefficient · min(n_dead / k_aux, 1) · mean_batch ‖e − ê‖²``.

FVU is logged beside the loss but is not part of it.

Loaded checkpoints may also use (``saekit.formats``): ``apply_b_dec_to_input=False``
(the encoder sees raw x, as Gemma Scope's), ``input_norm="layer_norm"`` (OpenAI's and
SAELens' per-token LayerNorm; see :meth:`SAE.decode`) and the ``gated`` kind, which
loads and runs but has no trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saekit.dictionaries.base import Dictionary, DictionaryConfig, register
from saekit.dictionaries.kernels import SparseEncode, sparse_decode
from saekit.dictionaries.options import KindOptions


class TrainStep(NamedTuple):
    """One training forward pass."""

    loss: Tensor
    """The total loss to backpropagate (scalar)."""
    x_hat: Tensor
    """Reconstruction ``[batch, d_in]``."""
    counts: Tensor
    """Tokens of the batch each feature fired on ``[d_dict]`` (dead tracking, L0)."""
    terms: dict[str, Tensor]
    """Loss terms (``mse``, ``sparsity``, ``aux``), detached, for logging."""


def firing_counts(codes: Tensor) -> Tensor:
    """Tokens each feature fired on, ``[d_dict]``."""
    return (codes > 0).sum(0)


@dataclass
class SAEOptions(KindOptions):
    """Options every SAE kind has."""

    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the input before encoding (SAELens' flag; only loaded
    checkpoints set it False, and saekit does not train them)."""


class SAE(Dictionary):
    """Shared parameters, init, decoding and saving of the SAE kinds."""

    Options = SAEOptions
    SAELENS_ARCHITECTURE = "standard"
    #: ``saekit.fit`` can train this kind (gated checkpoints only load and run).
    TRAINABLE: ClassVar[bool] = True
    #: LayerNorm epsilon of ``input_norm="layer_norm"`` (OpenAI's and SAELens').
    LN_EPS = 1e-5
    #: Decoder rows are kept at unit norm during training (else folded at the end).
    UNIT_NORM_DECODER: ClassVar[bool] = True

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        d, n = cfg.d_in, cfg.d_dict
        # The encoder is stored feature-major, enc_weight [d_dict, d_in] (nn.Linear's
        # orientation), and W_enc [d_in, d_dict] is its transposed view: the sparse
        # backward produces the gradient in this layout, the optimizer works on
        # contiguous memory, and BLAS reads the transposed operand at no cost.
        self.enc_weight = nn.Parameter(torch.empty(n, d))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None, dec_norm: float = 1.0) -> None:
        """Random decoder rows of norm ``dec_norm``, ``W_enc = W_decᵀ``, zero biases."""
        with torch.no_grad():
            w = torch.randn(self.cfg.d_dict, self.cfg.d_in, generator=generator)
            w = w / w.norm(dim=1, keepdim=True) * dec_norm
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    @property
    def W_enc(self) -> Tensor:
        """``[d_in, d_dict]`` (SAELens orientation), a view of ``enc_weight``."""
        return self.enc_weight.T

    def encoder_input(self, x: Tensor) -> Tensor:
        """``x`` as the encoder sees it: layer-normed when ``input_norm="layer_norm"``,
        then minus ``b_dec`` when ``apply_b_dec_to_input``."""
        self.check_input(x)
        if self.cfg.input_norm == "layer_norm":
            mu = x.mean(-1, keepdim=True)
            std = (x - mu).std(-1, keepdim=True)
            self._ln = (mu, std)
            x = (x - mu) / (std + self.LN_EPS)
        return x - self.b_dec if self.cfg.options["apply_b_dec_to_input"] else x

    def pre_acts(self, x: Tensor) -> Tensor:
        # addmm: the bias is added inside the matmul, not in a second pass over [batch, d_dict].
        flat = self.encoder_input(x).reshape(-1, self.cfg.d_in)
        return torch.addmm(self.b_enc, flat, self.W_enc).reshape(*x.shape[:-1], self.cfg.d_dict)

    def decode(self, codes: Tensor) -> Tensor:
        """``codes W_dec + b_dec``. With ``input_norm="layer_norm"`` the per-token LayerNorm
        of the last :meth:`encode` is undone, as OpenAI's and SAELens' SAEs do: decode
        codes of the tokens last encoded (edited or not); anything else is an error."""
        out = codes @ self.W_dec + self.b_dec
        if self.cfg.input_norm != "layer_norm":
            return out
        ln = getattr(self, "_ln", None)
        if ln is None or ln[0].shape[:-1] != codes.shape[:-1]:
            raise RuntimeError(f"{self!r} normalises each token (input_norm 'layer_norm'): decode needs "
                               "codes of the tokens last passed to encode, whose mean and std it restores")
        return out * ln[1] + ln[0]

    def saelens_tensors(self) -> dict[str, Tensor]:
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}

    def saelens_config(self) -> dict[str, Any]:
        return {**super().saelens_config(), "apply_b_dec_to_input": bool(self.cfg.options["apply_b_dec_to_input"]),
                "normalize_activations": "layer_norm" if self.cfg.input_norm == "layer_norm" else "none"}

    # -- training -------------------------------------------------------------------

    def mse(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return (x - x_hat).pow(2).sum(-1).mean()

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None) -> TrainStep:
        raise NotImplementedError

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Tensor:
        """AuxK (SAELens): dead features' top pre-activations model the residual."""
        if dead is None or not bool(dead.any()):
            return x.new_zeros(())
        n_dead = int(dead.sum())
        k_aux = self.cfg.options["aux_k"] or self.cfg.d_in // 2
        k = min(k_aux, n_dead)
        masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
        vals, idx = masked.topk(k, dim=-1)
        vals = F.relu(vals)
        e_hat = torch.zeros_like(pre).scatter_(-1, idx, vals) @ self.W_dec
        residual = (x - x_hat).detach()
        scale = min(n_dead / k_aux, 1.0)
        return self.cfg.options["aux_coefficient"] * scale * (residual - e_hat).pow(2).sum(-1).mean()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale decoder rows to unit norm, moving the scale into the encoder so the
        reconstruction is unchanged (σ is positively homogeneous)."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec /= norms[:, None]
        self.enc_weight *= norms[:, None]
        self.b_enc *= norms
        if hasattr(self, "threshold"):
            self.threshold *= norms

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the part of W_dec's gradient that would change row norms (sparsify)."""
        if self.W_dec.grad is not None:
            w = self.W_dec
            self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make a dictionary trained on ``scale · x`` take raw ``x``: codes shrink by
        ``scale`` and ``W_dec`` keeps unit rows."""
        self.b_dec /= scale
        self.b_enc /= scale
        if hasattr(self, "threshold"):
            self.threshold /= scale


def topk_codes(pre: Tensor, k: int) -> Tensor:
    """The k largest pre-activations of each row, ReLU'd; zeros elsewhere."""
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))


@dataclass
class ReluOptions(SAEOptions):
    """Options of kind ``relu``."""

    l1_coefficient: float = 1.0
    """Weight of the L1 penalty on codes times decoder row norms."""
    l1_warmup_steps: int = 0
    """Steps over which the penalty ramps up linearly from 0 (0: full from the start)."""


@register("relu")
class ReluSAE(SAE):
    """ReLU SAE with an L1 penalty weighted by decoder row norms (norms free in
    training, folded into the encoder at the end so rows end unit-norm)."""

    Options = ReluOptions
    UNIT_NORM_DECODER = False

    def encode(self, x: Tensor) -> Tensor:
        return F.relu(self.pre_acts(x))

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None) -> TrainStep:
        codes = self.encode(x)
        x_hat = self.decode(codes)
        mse = self.mse(x, x_hat)
        o = self.cfg.options
        warm = min(1.0, (step + 1) / o["l1_warmup_steps"]) if o["l1_warmup_steps"] else 1.0
        l1 = (codes * self.W_dec.norm(dim=1)).sum(-1).mean()
        sparsity = warm * o["l1_coefficient"] * l1
        return TrainStep(mse + sparsity, x_hat, firing_counts(codes),
                         {"mse": mse.detach(), "sparsity": sparsity.detach(), "aux": torch.zeros(())})


@dataclass
class TopKOptions(SAEOptions):
    """Options of kind ``topk`` (and ``batchtopk``'s AuxK)."""

    aux_k: int | None = None
    """Dead latents the AuxK loss reconstructs the residual with, per token (default d_in / 2)."""
    aux_coefficient: float = 1.0
    """Weight of the AuxK loss."""


@register("topk")
class TopKSAE(SAE):
    """TopK SAE (Gao et al.): keep the k largest pre-activations per token (ReLU'd)."""

    Options = TopKOptions
    NEEDS_K = True
    SAELENS_ARCHITECTURE = "topk"

    def encode(self, x: Tensor) -> Tensor:
        return topk_codes(self.pre_acts(x), self.cfg.k)

    def saelens_config(self) -> dict[str, Any]:
        return {**super().saelens_config(), "k": self.cfg.k, "rescale_acts_by_decoder_norm": False}

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None) -> TrainStep:
        """Sparse path (``kernels.py``): the dense pre-activations are computed without
        autograd; gradients flow only through the k selected (and k_aux dead) latents.
        Same loss and gradients as ``train_step_dense``."""
        k = self.cfg.k
        with torch.no_grad():
            pre = self.pre_acts(x)
            vals, idx = pre.topk(k, dim=-1)
            n_dead = int(dead.sum()) if dead is not None else 0
            if n_dead:
                k_aux = self.cfg.options["aux_k"] or self.cfg.d_in // 2
                aux_vals, aux_idx = pre.masked_fill(~dead, -torch.inf).topk(min(k_aux, n_dead), dim=-1)
                vals, idx_all = torch.cat([vals, aux_vals], 1), torch.cat([idx, aux_idx], 1)
            else:
                idx_all = idx
        v = F.relu(SparseEncode.apply(x, self.b_dec, self.W_enc, self.b_enc, idx_all, vals))
        x_hat = sparse_decode(idx, v[:, :k], self.W_dec, self.b_dec)
        mse = self.mse(x, x_hat)
        aux = x.new_zeros(())
        if n_dead:
            e_hat = F.embedding_bag(aux_idx, self.W_dec, per_sample_weights=v[:, k:].to(self.W_dec.dtype), mode="sum")
            residual = (x - x_hat).detach()
            aux = self.cfg.options["aux_coefficient"] * min(n_dead / k_aux, 1.0) * (residual - e_hat).pow(2).sum(-1).mean()
        counts = torch.bincount(idx[vals[:, :k] > 0], minlength=self.cfg.d_dict)
        return TrainStep(mse + aux, x_hat, counts,
                         {"mse": mse.detach(), "sparsity": torch.zeros(()), "aux": aux.detach()})

    def train_step_dense(self, x: Tensor, step: int, dead: Tensor | None = None) -> TrainStep:
        """The reference: dense codes, dense decode, autograd through everything."""
        pre = self.pre_acts(x)
        codes = topk_codes(pre, self.cfg.k)
        x_hat = self.decode(codes)
        mse = self.mse(x, x_hat)
        aux = self.aux_loss(x, x_hat, pre, dead)
        return TrainStep(mse + aux, x_hat, firing_counts(codes),
                         {"mse": mse.detach(), "sparsity": torch.zeros(()), "aux": aux.detach()})


def largest(flat: Tensor, k: int, row: int = 1) -> tuple[Tensor, Tensor]:
    """``flat.topk(k)`` (the same values and indices, up to ties), faster for large inputs.

    A strided sample of 2^16 values estimates the value above which about 1.5·k lie; the
    exact top k are taken among those. If fewer than k lie above it, it falls back to the
    full ``topk``, so the result is always exact. ``row`` is the length of the rows that
    were flattened: the stride is coprime with it, so the sample visits every column.
    On a 2-core CPU, 4096 × 1024 activations, k·batch = 24,576: 0.054 s against 0.18 s.
    """
    n = flat.numel()
    if n < 1 << 18 or k > n // 8:
        return flat.topk(k)
    stride = max(1, n >> 16) | 1
    while math.gcd(stride, row) != 1:
        stride += 2
    with torch.no_grad():
        sample = flat.detach()[::stride]
        rank = max(1, min(sample.numel(), sample.numel() - int(1.5 * k * sample.numel() / n)))
        cut = sample.kthvalue(rank).values
        where = (flat.detach() > cut).nonzero().squeeze(1)
    if where.numel() < k:
        return flat.topk(k)
    vals, pos = flat[where].topk(k)
    return vals, where[pos]


@dataclass
class BatchTopKOptions(TopKOptions):
    """Options of kind ``batchtopk``."""

    threshold_decay: float = 0.999
    """Decay of the running estimate of the inference threshold during training."""


@register("batchtopk")
class BatchTopKSAE(SAE):
    """BatchTopK (Bussmann et al.): in training keep the k·batch largest ReLU'd
    pre-activations across the whole batch; at inference a per-dictionary threshold
    (an EMA of the smallest kept activation during training, as dictionary_learning and
    SAELens estimate it, recalibrated at the end of training on a sample:
    :meth:`calibrate_threshold`) replaces the batch, so it runs as a JumpReLU and saves as SAELens
    ``jumprelu`` with a constant threshold."""

    Options = BatchTopKOptions
    NEEDS_K = True
    SAELENS_ARCHITECTURE = "jumprelu"

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.full((cfg.d_dict,), -1.0))

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        if bool((self.threshold < 0).any()):
            raise RuntimeError("batchtopk threshold not estimated yet: train, or load a trained dictionary")
        return F.relu(pre) * (pre > self.threshold)

    def saelens_tensors(self) -> dict[str, Tensor]:
        return {**super().saelens_tensors(), "threshold": self.threshold}

    def saelens_config(self) -> dict[str, Any]:
        cfg = super().saelens_config()
        cfg["metadata"] = {**cfg["metadata"], "training_architecture": "batchtopk",  # as SAELens records it
                           "training_architecture_details": {"k": self.cfg.k}}
        return cfg

    @torch.no_grad()
    def calibrate_threshold(self, x: Tensor) -> None:
        """Set the inference threshold to the smallest activation BatchTopK keeps on ``x``
        as one batch (the k·len(x) largest), so that inference keeps k per token on average.

        The training EMA still carries the early, untrained cutoff when a run is shorter
        than a few EMA horizons (1,000 steps at the default decay); on synthetic ground
        truth (512 features in 64 dimensions, k 20, 1,220 steps) it gave an inference L0
        of 9.6. The trainer calls this at the end on its sample of (scaled) inputs. Rows are
        capped so the ``[rows, d_dict]`` activations stay under 2^26 values."""
        x = x[:max(256, (1 << 26) // self.cfg.d_dict)]
        acts = F.relu(self.pre_acts(x)).flatten()
        kept = acts.topk(min(self.cfg.k * len(x), acts.numel())).values
        kept = kept[kept > 0]
        if kept.numel():
            self.threshold.fill_(float(kept[-1]))

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None) -> TrainStep:
        pre = self.pre_acts(x)
        codes = self.batch_codes(pre, step)
        x_hat = self.decode(codes)
        mse = self.mse(x, x_hat)
        aux = self.aux_loss(x, x_hat, pre, dead)
        return TrainStep(mse + aux, x_hat, firing_counts(codes),
                         {"mse": mse.detach(), "sparsity": torch.zeros(()), "aux": aux.detach()})

    def batch_codes(self, pre: Tensor, step: int) -> Tensor:
        """Training codes: the k·batch largest ReLU'd pre-activations of the batch; updates
        the inference threshold's running estimate."""
        acts = F.relu(pre)
        flat = acts.flatten()
        vals, idx = largest(flat, min(self.cfg.k * pre.shape[0], flat.numel()), self.cfg.d_dict)
        codes = torch.zeros_like(flat).scatter_(0, idx, vals).view_as(acts)
        with torch.no_grad():
            kept = vals[vals > 0]
            if kept.numel():
                # A running mean until the EMA's horizon is reached, then the EMA: a plain
                # EMA from step 0 would keep the untrained model's cutoff in short runs.
                decay = min(self.cfg.options["threshold_decay"], step / (step + 1))
                t = kept.min()
                first = self.threshold < 0
                self.threshold.copy_(torch.where(first, t, decay * self.threshold + (1 - decay) * t))
        return codes


class _JumpReLU(torch.autograd.Function):
    """z·H(z − θ) with a rectangle-kernel straight-through gradient for θ (Rajamanoharan et al.)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta)

    @staticmethod
    def backward(ctx, g: Tensor):
        z, theta = ctx.saved_tensors
        h = ctx.bandwidth
        near = ((z - theta).abs() < h / 2).to(z.dtype)
        g_theta = (-(theta / h) * near * g).sum(0)
        return g * (z > theta), g_theta, None


class _Step(torch.autograd.Function):
    """H(z − θ) with the same straight-through gradient for θ (for the L0 penalty)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, g: Tensor):
        z, theta = ctx.saved_tensors
        h = ctx.bandwidth
        near = ((z - theta).abs() < h / 2).to(z.dtype)
        return None, (-(1.0 / h) * near * g).sum(0), None


@dataclass
class JumpReLUOptions(SAEOptions):
    """Options of kind ``jumprelu``."""

    l0_coefficient: float = 1.0
    """Weight of the L0 penalty (or of the squared deviation from ``target_l0``)."""
    target_l0: float | None = None
    """Penalise (L0 / target_l0 - 1)^2 instead of L0."""
    bandwidth: float = 0.05
    """Width of the straight-through estimators' kernel around each threshold."""
    threshold_init: float = 0.01
    """Initial threshold of every feature."""


@register("jumprelu")
class JumpReLUSAE(SAE):
    """JumpReLU SAE: learned per-feature thresholds trained through straight-through
    estimators, with an L0 penalty (or a target L0)."""

    Options = JumpReLUOptions
    SAELENS_ARCHITECTURE = "jumprelu"

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full((cfg.d_dict,), float(cfg.options["threshold_init"])))

    def encode(self, x: Tensor) -> Tensor:
        pre = F.relu(self.pre_acts(x))
        return pre * (pre > self.threshold)

    def saelens_tensors(self) -> dict[str, Tensor]:
        return {**super().saelens_tensors(), "threshold": self.threshold}

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None) -> TrainStep:
        o = self.cfg.options
        pre = F.relu(self.pre_acts(x))
        codes = _JumpReLU.apply(pre, self.threshold, o["bandwidth"])
        x_hat = self.decode(codes)
        mse = self.mse(x, x_hat)
        l0 = _Step.apply(pre, self.threshold, o["bandwidth"]).sum(-1).mean()
        if o["target_l0"]:
            sparsity = o["l0_coefficient"] * (l0 / o["target_l0"] - 1) ** 2
        else:
            sparsity = o["l0_coefficient"] * l0
        return TrainStep(mse + sparsity, x_hat, firing_counts(codes),
                         {"mse": mse.detach(), "sparsity": sparsity.detach(), "aux": torch.zeros(())})

    @torch.no_grad()
    def clamp_threshold(self) -> None:
        self.threshold.clamp_(min=0.0)


@register("gated")
class GatedSAE(SAE):
    """Gated SAE (Rajamanoharan et al. 2024), for loaded checkpoints: a gate
    ``(x W_enc + b_gate) > 0`` decides which features fire, a magnitude path with
    shared, rescaled weights ``ReLU(x (W_enc ⊙ exp(r_mag)) + b_mag)`` says how much
    (SAELens' ``gated`` architecture). Loads and runs; saekit has no gated trainer."""

    SAELENS_ARCHITECTURE = "gated"
    TRAINABLE = False

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        del self.b_enc  # the gated encoder has two biases instead (zero, like b_enc was)
        n = cfg.d_dict
        self.b_gate = nn.Parameter(torch.zeros(n))
        self.b_mag = nn.Parameter(torch.zeros(n))
        self.r_mag = nn.Parameter(torch.zeros(n))

    def encode(self, x: Tensor) -> Tensor:
        flat = self.encoder_input(x).reshape(-1, self.cfg.d_in)
        pre = flat @ self.W_enc
        gate = pre + self.b_gate > 0
        mag = F.relu(pre * self.r_mag.exp() + self.b_mag)
        return (gate * mag).reshape(*x.shape[:-1], self.cfg.d_dict)

    def saelens_tensors(self) -> dict[str, Tensor]:
        return {"W_enc": self.W_enc, "b_gate": self.b_gate, "r_mag": self.r_mag, "b_mag": self.b_mag,
                "W_dec": self.W_dec, "b_dec": self.b_dec}

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        norms = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec /= norms[:, None]
        self.enc_weight *= norms[:, None]  # the gate's sign is unchanged when b_gate scales too
        self.b_gate *= norms
        self.b_mag *= norms
