"""Sparse training kernels for the top-k kinds: gradients only through selected latents.

A TopK SAE step is dominated by the dense encoder matmul ``(x − b_dec) W_enc``
(2·batch·d_in·d_dict FLOP). Everything after the top-k touches only batch·k latents,
so the backward need not be dense either: :class:`SparseEncode` takes the forward's
pre-activations at the selected indices and returns the gradients of ``W_enc``,
``b_enc`` and ``b_dec`` from a sparse (CSR) product, and :func:`sparse_decode` decodes
with ``embedding_bag``, whose backward touches only the selected decoder rows. The
dense path (``codes @ W_dec``) is kept as the reference the tests compare against.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor


class SparseEncode(torch.autograd.Function):
    """``values = ((x − b_dec) W_enc + b_enc)[b, idx[b, j]]`` with a sparse backward.

    ``b_dec`` is whatever the encoder subtracts from its input: a transcoder passes zeros
    that need no gradient (its ``b_dec`` lives in the output space), and the gradient
    returned for them is dropped by autograd.

    ``values`` are passed in (gathered from the forward's dense pre-activations, which
    were computed without autograd), so nothing is recomputed.
    """

    @staticmethod
    def forward(ctx, x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, idx: Tensor,
                values: Tensor) -> Tensor:
        ctx.save_for_backward(x, b_dec, W_enc, idx)
        return values.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        x, b_dec, W_enc, idx = ctx.saved_tensors
        d_in, n = W_enc.shape
        B, k = idx.shape
        flat_idx = idx.flatten()
        flat_g = g.flatten().to(W_enc.dtype)  # bf16 under autocast; parameters' grads are fp32
        # Σ over tokens of the gradient reaching each latent: b_enc's gradient, and via
        # W_enc it gives b_dec's (pre-activations depend on −b_dec).
        per_latent = torch.zeros(n, dtype=flat_g.dtype, device=g.device).index_add_(0, flat_idx, flat_g)
        grad_b_enc = per_latent
        grad_b_dec = -(W_enc @ per_latent)
        # W_enc's gradient: Gᵀ (x − b_dec), with G [batch, n] holding g at idx: a CSR
        # product over the batch·k non-zeros instead of a dense [n, batch] matmul.
        order = flat_idx.argsort()
        rows = flat_idx[order]
        crow = torch.zeros(n + 1, dtype=torch.long, device=g.device)
        crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
        cols = torch.arange(B, device=g.device).repeat_interleave(k)[order]
        with warnings.catch_warnings():
            # The indices are valid by construction; skip the (costly) invariant checks.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            Gt = torch.sparse_csr_tensor(crow, cols, flat_g[order], (n, B), check_invariants=False)
        grad_W_enc = (Gt @ (x - b_dec).to(W_enc.dtype)).T
        return None, grad_b_dec, grad_W_enc, grad_b_enc, None, None


def sparse_decode(idx: Tensor, vals: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """``Σ_j vals[b, j] · W_dec[idx[b, j]] + b_dec`` without a dense [batch, d_dict] code matrix."""
    return F.embedding_bag(idx, W_dec, per_sample_weights=vals.to(W_dec.dtype), mode="sum") + b_dec
