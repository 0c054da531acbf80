"""The length, batch and learning rate of a training run when the caller does not say.

The anchors' defaults (one pass at batch 4096, lr 2e-4 / sqrt(d_dict / 2^14)) are tuned
for the tens of millions of tokens a GPU run streams; a CPU or notebook run harvests
10^5-10^6 tokens, and there they stop far from converged. These rules keep large runs
as the anchors have them and lengthen and speed up small ones.
"""

from __future__ import annotations

import math

#: Optimizer steps a default run takes at least, by repeating small data (see default_schedule).
MIN_STEPS = 1200
MAX_EPOCHS = 32


def default_schedule(n: int, batch_size: int | None = None) -> tuple[int, int]:
    """``(batch_size, epochs)`` when the caller names neither ``n_tokens`` nor ``epochs``.

    One pass at batch 4096, the anchors' default (SAELens, sparsify), suits the tens of
    millions of tokens they train on, but gives a few dozen steps on the 10⁵–10⁶ tokens
    a CPU or a notebook harvests, far from converged: on SmolLM2-135M's
    ``blocks.15.mlp.hook_post`` (d_dict 6144, k 32) one such pass over 63k tokens left FVU
    0.785, and 8 epochs over 152k tokens at batch 1024 gave 0.337. So the batch shrinks with the data (about n/150
    rounded to a power of two, within 256..4096) and the data repeats until the run has
    at least :data:`MIN_STEPS` optimizer steps (at most :data:`MAX_EPOCHS` epochs).
    Large data keeps one pass at 4096: from about 5M tokens on, nothing changes.
    """
    if batch_size is None:
        batch_size = int(min(4096, max(256, 2 ** round(math.log2(max(n, 1) / 150)))))
    epochs = min(MAX_EPOCHS, max(1, math.ceil(MIN_STEPS * batch_size / max(n, 1))))
    return batch_size, epochs


def default_lr(d_dict: int, steps: int) -> float:
    """sparsify's ``2e-4 / sqrt(d_dict / 2^14)``, raised for runs shorter than 10,000 steps
    by ``sqrt(10,000 / steps)`` (at most 4×): the anchors' rate is tuned for tens of
    thousands of steps and leaves a short run unconverged. On SmolLM2-135M's
    ``blocks.15.mlp.hook_post`` (150k tokens, d_dict 6144, k 32, 1,307 steps) held-out
    FVU was 0.381 at the anchors' rate (3.3e-4), 0.354 with twice the steps, and 0.336 at
    1e-3 (``default_lr`` gives 9.0e-4 there)."""
    return 2e-4 / math.sqrt(d_dict / 2**14) * min(4.0, max(1.0, math.sqrt(10_000 / max(steps, 1))))


#: A latent is dead for AuxK once silent for this many of an average latent's firing intervals (d_dict / k tokens).
DEAD_INTERVALS = 500


def default_dead_tokens(total: int, batch_size: int, d_dict: int, k: int | None) -> int:
    """Tokens without firing after which a latent counts as dead (AuxK revives it).

    The anchors' 10M tokens (sparsify, Gao et al.) is a small part of the 10⁸–10⁹ tokens
    they train on. A short run needs the revival to start early enough to finish: a latent
    is dead once silent for 1% of the run *and* for :data:`DEAD_INTERVALS` times the
    interval at which an average latent fires (d_dict / k tokens), and never later than
    10M tokens. The second condition keeps rare but live features from being pushed to
    the residual: at d_dict 6144 and k 32 it flags latents rarer than about 1 in 10⁵.
    The window was a tenth of the run before; on 128 features in 32 dimensions (200k
    tokens, k 3, 1,367 steps: ``tests/test_fit.py``) BatchTopK's MMCS was 0.908 with it
    (16 latents never firing at inference), 0.964 with a 5k- or 20k-token window, 0.949
    with 43k, and 0.959 with this rule (21k); TopK's went from 0.969 to 0.985. Without
    ``k`` (ReLU, JumpReLU: no AuxK; the window only counts dead latents for the logs), a
    tenth of the run as before.
    """
    if not k:
        return int(min(10_000_000, max(batch_size, total // 10)))
    return int(min(10_000_000, max(batch_size, total // 100, DEAD_INTERVALS * d_dict // k)))
