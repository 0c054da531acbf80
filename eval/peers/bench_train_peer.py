"""One TopK SAE training step of a peer library, timed; run by the peer venv's python.

    .venv-peers/bin/python eval/peers/bench_train_peer.py --lib saelens|sparsify \
        [--data x.pt] [--d-in 512] [--d-dict 8192] [--k 32] [--batch 2048] [--steps 10]

Prints one JSON line (the last line of stdout): ``{"lib", "version", "seconds",
"tokens/s", ...}`` with the median of ``--steps`` timed steps after ``--warmup`` steps.
``eval/bench_train.py --peers PYTHON`` runs this interleaved with saekit's own step.

Each step is the library's own training-step code path, as its trainer runs it:

- ``saelens``: ``TopKTrainingSAE.training_forward_pass(TrainStepInput(...))`` (SAELens
  defaults: decoder-norm rescaled TopK, dense activations), the firing statistics
  ``SAETrainer._train_step`` keeps, ``loss.backward()``, ``clip_grad_norm_(…, 1.0)``,
  ``Adam.step()``, ``zero_grad()``;
- ``sparsify``: ``set_decoder_norm_to_unit_norm()`` (the Trainer does it before every
  forward), ``SparseCoder.forward(x, dead_mask=...)`` (fused TopK encoder, eager
  ``embedding_bag`` decoder: the CPU has no Triton), the did-fire bookkeeping,
  ``fvu.backward()``, ``remove_gradient_parallel_to_decoder_directions()``,
  ``Adam.step()``, ``zero_grad()``.

With ``--transcoder`` (``--data`` then holds ``{"x", "y"}``), sparsify trains a TopK
transcoder (``transcode=True``; ``skip_connection=True`` with ``--skip``) as its Trainer
does: ``forward(x, y, dead_mask=...)``, the encoder bias and ``b_dec`` initialised from
the means, and neither the decoder renormalisation nor the gradient projection (the
Trainer skips both when transcoding). SAELens has no TopK transcoder training class.

Both get an all-false dead mask (no dead latents: the AuxK branch is skipped, as in
saekit's step, whose ``dead`` mask is all false too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib.metadata import version

# sparsify picks its decoder at import: Triton is absent on CPU, and we want eager either way.
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
# PyPI's torchvision wheel is a CUDA build that cannot load against the CPU torch
# ("operator torchvision::nms does not exist"), and transformers (imported by both
# libraries) imports it when it is installed. Nothing here needs it: hide it.
sys.modules.setdefault("torchvision", None)  # type: ignore[arg-type]

import torch  # noqa: E402


def saelens_step(x: torch.Tensor, d_dict: int, k: int):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    B, d = x.shape
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=d_dict, k=k, dtype="float32", device="cpu"))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, betas=(0.9, 0.999))
    dead = torch.zeros(d_dict, dtype=torch.bool)
    since_fired = torch.zeros(d_dict)
    freq = torch.zeros(d_dict)
    sae.train()

    def step() -> None:
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                                                       n_training_steps=0, is_logging_step=False))
        with torch.no_grad():  # SAETrainer._train_step's bookkeeping
            firing = out.feature_acts.bool().float()
            did_fire = firing.sum(-2).bool()
            since_fired.add_(1)
            since_fired[did_fire] = 0
            freq.add_(firing.sum(0))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return step, {"version": version("sae-lens")}


def sparsify_step(x: torch.Tensor, d_dict: int, k: int, y: torch.Tensor | None = None, skip: bool = False):
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify import utils as sp_utils

    B, d = x.shape
    transcode = y is not None
    sae = SparseCoder(d, SparseCoderConfig(num_latents=d_dict, k=k, transcode=transcode, skip_connection=skip),
                      device="cpu", dtype=torch.float32)
    with torch.no_grad():  # the Trainer's first-step initialisation
        sae.b_dec.copy_((y if transcode else x).mean(0))
        if transcode:
            sae.encoder.bias.copy_(-x.mean(0) @ sae.encoder.weight.T)
    lr = 2e-4 / (d_dict / 2**14) ** 0.5  # the Trainer's default Adam lr
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    dead = torch.zeros(d_dict, dtype=torch.bool)
    since_fired = torch.zeros(d_dict, dtype=torch.long)
    did_fire = torch.zeros(d_dict, dtype=torch.bool)

    def step() -> None:
        if not transcode:
            sae.set_decoder_norm_to_unit_norm()
        out = sae(x, y, dead_mask=dead)
        did_fire[out.latent_indices.flatten()] = True
        loss = out.fvu + out.auxk_loss + out.multi_topk_fvu / 8  # the Trainer's loss (auxk 0 here)
        loss.backward()
        if not transcode:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            since_fired.add_(B)
            since_fired[did_fire] = 0
            did_fire.zero_()

    return step, {"version": version("eai-sparsify"), "decoder": sp_utils.decoder_impl.__name__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, choices=["saelens", "sparsify"])
    ap.add_argument("--data", default=None, help="a torch.save'd [batch, d_in] fp32 tensor (default: seeded randn)")
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-dict", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--transcoder", action="store_true", help="sparsify only: a TopK transcoder, --data {x, y}")
    ap.add_argument("--skip", action="store_true", help="with --transcoder: skip_connection=True")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.transcoder and (args.lib != "sparsify" or not args.data):
        ap.error("--transcoder needs --lib sparsify and --data with {x, y}")
    y = None
    if args.data:
        x = torch.load(args.data, weights_only=True)
        if args.transcoder:
            x, y = x["x"].float().contiguous(), x["y"].float().contiguous()
        else:
            x = x.float().contiguous()
    else:
        x = torch.randn(args.batch, args.d_in, generator=torch.Generator().manual_seed(0))
    if args.transcoder:
        step, info = sparsify_step(x, args.d_dict, args.k, y, args.skip)
    else:
        step, info = {"saelens": saelens_step, "sparsify": sparsify_step}[args.lib](x, args.d_dict, args.k)
    for _ in range(args.warmup):
        step()
    ts = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    sec = statistics.median(ts)
    print(json.dumps({"lib": args.lib, **info, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "batch": len(x), "d_in": x.shape[1], "d_dict": args.d_dict, "k": args.k,
                      "steps": args.steps, "seconds": sec, "tokens/s": len(x) / sec}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
