"""Sparse autoencoders: ``relu`` (L1), ``topk``, ``batchtopk`` and ``jumprelu`` (the last
two, and the loaded-only ``gated``, in :mod:`saekit.dictionaries.thresholded`).

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

Transcoders and skip transcoders
--------------------------------
Every SAE kind becomes a transcoder when ``cfg.d_out`` is set (``saekit.fit(x, ...,
target=y)``): it encodes the input hook's activation and predicts the output hook's,

    codes = σ(x W_enc + b_enc),   ŷ = codes W_dec + b_dec [+ x W_skipᵀ]

with ``W_dec [d_dict, d_out]`` (unit rows: feature directions in the *output* space),
``b_dec [d_out]`` and, with option ``skip``, ``W_skip [d_out, d_in]`` (SAELens'
``SkipTranscoder`` orientation; sparsify's ``skip_connection``), zero at init. The
encoder sees the raw input: ``b_dec`` lives in the output space, so there is nothing to
subtract (``apply_b_dec_to_input=False``, as SAELens requires for its transcoders). The
input's own centring is folded into ``b_enc`` instead: the trainer starts ``b_enc`` at
``−m W_enc`` with ``m`` the input's geometric median, so pre-activations start centred
as an SAE's do (sparsify's ``transcode`` starts its encoder bias at ``−mean W_encᵀ``),
and ``b_enc`` is free to move from there. The loss is the SAE kind's with ``y`` in place
of ``x`` (MSE against the target; AuxK models the target's residual, ``aux_k`` default
d_out / 2).

``decode(codes, x=None)`` is the prediction from the codes; for a skip transcoder the
skip term is added only when the input ``x`` the codes came from is passed (as
circuit-tracer's ``decode(acts, input_acts)``). Without ``x`` it is the sparse part
``codes W_dec + b_dec``: what a code edit changes, so differences of decodes (steering,
ablations) are the same either way. ``forward(x)`` and :meth:`SAE.reconstruct` give the
whole prediction; metrics use them.

Loaded checkpoints may also use (``saekit.formats``): ``apply_b_dec_to_input=False``
(the encoder sees raw x, as Gemma Scope's), ``input_norm="layer_norm"`` (OpenAI's and
SAELens' per-token LayerNorm; see :meth:`SAE.decode`) and the ``gated`` kind, which
loads and runs but has no trainer.
"""

from __future__ import annotations

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
    """Subtract ``b_dec`` from the input before encoding (SAELens' flag). False for every
    transcoder (set automatically: its ``b_dec`` is in the output space); among SAEs only
    loaded checkpoints set it False, and saekit does not train them."""
    skip: bool = False
    """Skip transcoder: add an affine skip term ``x W_skipᵀ`` (``W_skip [d_out, d_in]``,
    zero at init) to the prediction (transcoders only)."""


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

    TRANSCODES = True

    def __init__(self, cfg: DictionaryConfig):
        super().__init__(cfg)
        d, n, d_out = cfg.d_in, cfg.d_dict, cfg.target_width
        if cfg.is_transcoder:
            cfg.options["apply_b_dec_to_input"] = False  # b_dec is in the output space
        elif cfg.options.get("skip"):
            raise ValueError(f"option skip=True needs a transcoder (a target / d_out): a skip term from an "
                             f"activation to itself is the identity ({cfg.kind}, d_in={d})")
        # The encoder is stored feature-major, enc_weight [d_dict, d_in] (nn.Linear's
        # orientation), and W_enc [d_in, d_dict] is its transposed view: the sparse
        # backward produces the gradient in this layout, the optimizer works on
        # contiguous memory, and BLAS reads the transposed operand at no cost.
        self.enc_weight = nn.Parameter(torch.empty(n, d))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, d_out))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.W_skip = nn.Parameter(torch.zeros(d_out, d)) if cfg.options.get("skip") else None
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None, dec_norm: float = 1.0) -> None:
        """Random decoder rows of norm ``dec_norm``, zero biases and skip term; ``W_enc =
        W_decᵀ`` for an SAE. A transcoder's encoder is drawn independently (random
        columns of the same norm, in the input space): a feature's input direction is
        unrelated to its output direction, so tying them (possible only when d_in ==
        d_out) would be no better a guess."""
        with torch.no_grad():
            w = torch.randn(self.cfg.d_dict, self.cfg.target_width, generator=generator)
            w = w / w.norm(dim=1, keepdim=True) * dec_norm
            self.W_dec.copy_(w)
            if self.cfg.is_transcoder:
                e = torch.randn(self.cfg.d_dict, self.cfg.d_in, generator=generator)
                self.enc_weight.copy_(e / e.norm(dim=1, keepdim=True) * dec_norm)
            else:
                self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()
            if self.W_skip is not None:
                self.W_skip.zero_()

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

    def encoder_offset(self, x: Tensor) -> Tensor:
        """What the encoder subtracts from its input: ``b_dec``, or zeros (no gradient)
        when ``apply_b_dec_to_input`` is off (transcoders)."""
        return self.b_dec if self.cfg.options["apply_b_dec_to_input"] else x.new_zeros(self.cfg.d_in)

    def skip_term(self, x: Tensor) -> Tensor | None:
        """``x W_skipᵀ`` for a skip transcoder, else None."""
        return None if self.W_skip is None else x @ self.W_skip.T

    def pre_acts(self, x: Tensor) -> Tensor:
        # addmm: the bias is added inside the matmul, not in a second pass over [batch, d_dict].
        flat = self.encoder_input(x).reshape(-1, self.cfg.d_in)
        return torch.addmm(self.b_enc, flat, self.W_enc).reshape(*x.shape[:-1], self.cfg.d_dict)

    def decode(self, codes: Tensor, x: Tensor | None = None) -> Tensor:
        """``codes W_dec + b_dec``, plus a skip transcoder's ``x W_skipᵀ`` when the input
        ``x`` the codes came from is given (module docstring: without it, the sparse part).
        With ``input_norm="layer_norm"`` the per-token LayerNorm
        of the last :meth:`encode` is undone, as OpenAI's and SAELens' SAEs do: decode
        codes of the tokens last encoded (edited or not); anything else is an error."""
        out = codes @ self.W_dec + self.b_dec
        if x is not None and self.W_skip is not None:
            out = out + self.skip_term(x.to(self.W_skip.dtype))
        if self.cfg.input_norm != "layer_norm":
            return out
        ln = getattr(self, "_ln", None)
        if ln is None or ln[0].shape[:-1] != codes.shape[:-1]:
            raise RuntimeError(f"{self!r} normalises each token (input_norm 'layer_norm'): decode needs "
                               "codes of the tokens last passed to encode, whose mean and std it restores")
        return out * ln[1] + ln[0]

    def forward(self, x: Tensor) -> Tensor:
        """The whole prediction: ``decode(encode(x), x)``."""
        return self.decode(self.encode(x), x)

    def reconstruct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        codes = self.encode(x)
        return codes, self.decode(codes, x)

    def saelens_tensors(self) -> dict[str, Tensor]:
        out = {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec}
        return out if self.W_skip is None else {**out, "W_skip": self.W_skip}

    #: SAELens' transcoder architectures, by the architecture the SAE kind saves as and
    #: whether it has a skip term (SAELens has no TopK transcoder: those keep ``topk``).
    SAELENS_TRANSCODERS: ClassVar[dict[tuple[str, bool], str]] = {
        ("standard", False): "transcoder", ("standard", True): "skip_transcoder",
        ("jumprelu", False): "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder"}

    def saelens_config(self) -> dict[str, Any]:
        cfg = {**super().saelens_config(), "apply_b_dec_to_input": bool(self.cfg.options["apply_b_dec_to_input"]),
               "normalize_activations": "layer_norm" if self.cfg.input_norm == "layer_norm" else "none"}
        if self.cfg.is_transcoder:
            arch = cfg["architecture"]
            cfg["architecture"] = self.SAELENS_TRANSCODERS.get((arch, self.W_skip is not None), arch)
            cfg["metadata"] = {**cfg["metadata"], "hook_name_out": self.cfg.output_hook}
        return cfg

    # -- training -------------------------------------------------------------------

    def mse(self, x: Tensor, x_hat: Tensor) -> Tensor:
        return (x - x_hat).pow(2).sum(-1).mean()

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None,
                   target: Tensor | None = None) -> TrainStep:
        """One forward pass and loss on inputs ``x``; ``target`` is what the prediction is
        compared with (a transcoder's output activations; ``x`` itself when None)."""
        raise NotImplementedError

    def _target(self, x: Tensor, target: Tensor | None) -> Tensor:
        if target is None:
            if self.cfg.is_transcoder:
                raise ValueError(f"{self!r} is a transcoder: train_step needs the target activations")
            return x
        return target

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None) -> Tensor:
        """AuxK (SAELens): dead features' top pre-activations model the residual."""
        if dead is None or not bool(dead.any()):
            return x.new_zeros(())
        n_dead = int(dead.sum())
        k_aux = self.cfg.options["aux_k"] or self.cfg.target_width // 2
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
    def fold_input_scale(self, scale: float, target_scale: float | None = None) -> None:
        """Make a dictionary trained on ``scale · x`` (predicting ``target_scale · y``; an
        SAE's target is its input, ``target_scale = scale``) take raw ``x`` and predict raw
        ``y``: codes shrink by ``target_scale``, ``W_dec`` keeps unit rows, so the encoder
        weights scale by ``scale / target_scale`` (1 for an SAE) and a skip term too."""
        t = scale if target_scale is None else target_scale
        self.b_dec /= t
        self.b_enc /= t
        if t != scale:
            self.enc_weight *= scale / t
        if self.W_skip is not None:
            self.W_skip *= scale / t
        if hasattr(self, "threshold"):
            self.threshold /= t


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

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None,
                   target: Tensor | None = None) -> TrainStep:
        y = self._target(x, target)
        codes = self.encode(x)
        x_hat = self.decode(codes, x)
        mse = self.mse(y, x_hat)
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

    def train_step(self, x: Tensor, step: int, dead: Tensor | None = None,
                   target: Tensor | None = None) -> TrainStep:
        """Sparse path (``kernels.py``): the dense pre-activations are computed without
        autograd; gradients flow only through the k selected (and k_aux dead) latents.
        Same loss and gradients as ``train_step_dense``."""
        k = self.cfg.k
        y = self._target(x, target)
        with torch.no_grad():
            pre = self.pre_acts(x)
            vals, idx = pre.topk(k, dim=-1)
            n_dead = int(dead.sum()) if dead is not None else 0
            if n_dead:
                k_aux = self.cfg.options["aux_k"] or self.cfg.target_width // 2
                aux_vals, aux_idx = pre.masked_fill(~dead, -torch.inf).topk(min(k_aux, n_dead), dim=-1)
                vals, idx_all = torch.cat([vals, aux_vals], 1), torch.cat([idx, aux_idx], 1)
            else:
                idx_all = idx
        v = F.relu(SparseEncode.apply(x, self.encoder_offset(x), self.W_enc, self.b_enc, idx_all, vals))
        x_hat = sparse_decode(idx, v[:, :k], self.W_dec, self.b_dec)
        if self.W_skip is not None:
            x_hat = x_hat + self.skip_term(x)
        mse = self.mse(y, x_hat)
        aux = x.new_zeros(())
        if n_dead:
            e_hat = F.embedding_bag(aux_idx, self.W_dec, per_sample_weights=v[:, k:].to(self.W_dec.dtype), mode="sum")
            residual = (y - x_hat).detach()
            aux = self.cfg.options["aux_coefficient"] * min(n_dead / k_aux, 1.0) * (residual - e_hat).pow(2).sum(-1).mean()
        counts = torch.bincount(idx[vals[:, :k] > 0], minlength=self.cfg.d_dict)
        return TrainStep(mse + aux, x_hat, counts,
                         {"mse": mse.detach(), "sparsity": torch.zeros(()), "aux": aux.detach()})

    def train_step_dense(self, x: Tensor, step: int, dead: Tensor | None = None,
                         target: Tensor | None = None) -> TrainStep:
        """The reference: dense codes, dense decode, autograd through everything."""
        y = self._target(x, target)
        pre = self.pre_acts(x)
        codes = topk_codes(pre, self.cfg.k)
        x_hat = self.decode(codes, x)
        mse = self.mse(y, x_hat)
        aux = self.aux_loss(y, x_hat, pre, dead)
        return TrainStep(mse + aux, x_hat, firing_counts(codes),
                         {"mse": mse.detach(), "sparsity": torch.zeros(()), "aux": aux.detach()})
