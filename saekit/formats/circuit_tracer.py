"""Export transcoders as the per-layer transcoder set circuit-tracer loads
(safety-research/circuit-tracer 0.5: ``utils.hf_utils.load_transcoders`` with
``model_kind: transcoder_set`` → ``transcoder.load_transcoder_set``).

circuit-tracer reads one safetensors file per layer (``load_relu_transcoder``) with
``W_enc [d_transcoder, d_model]`` (``F.linear`` orientation), ``W_dec [d_transcoder,
d_model]``, ``b_enc``, ``b_dec``, ``activation_function.threshold`` for a JumpReLU (ReLU
without it) and ``W_skip [d_model, d_model]`` (added as ``x @ W_skip.T``), and a
``config.yaml`` with ``model_kind: transcoder_set``, the block-relative
``feature_input_hook``/``feature_output_hook`` and the files of layers 0, 1, ..., N-1 in
that order (the position in the list is the layer). This writes that directory from one
transcoder per layer; a set that misses a layer is refused, as circuit-tracer refuses it.

Kinds: relu, jumprelu, and batchtopk (and Matryoshka BatchTopK), whose inference is a
JumpReLU with saekit's calibrated thresholds. circuit-tracer 0.5's loader has no TopK
(its ``TopK`` module is never built from a file), so a TopK transcoder is refused rather
than loaded as a ReLU. Its JumpReLU is ``x·(x > θ)``, saekit's ``ReLU(x)·(x > θ)``: equal
for the non-negative thresholds saekit trains. ``tests/fixtures/transcoders/circuit_tracer``
holds outputs computed by circuit-tracer's own loader on an export (``make fixtures``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from saekit.fileio import atomic_directory
from saekit.models import HOOK_RE  # the TransformerLens hook grammar saekit uses

#: saekit hook names that HookedTransformer (which circuit-tracer hooks) calls otherwise:
#: the MLP's normed input is ``ln2.hook_normalized`` there, as in circuit-tracer's Gemma configs.
TL_NAMES = {"ln2.hook_out": "ln2.hook_normalized"}

#: saekit kinds circuit-tracer can run, and its activation for each.
ACTIVATIONS = {"relu": "relu", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "matryoshka_batchtopk": "jumprelu"}


def _layer_tensors(d: Any) -> tuple[int, dict[str, torch.Tensor], tuple[str, str]]:
    """``(layer, tensors, (input hook, output hook))`` of one transcoder, block-relative
    hook names as HookedTransformer spells them; a ValueError says what does not fit."""
    c = d.cfg
    if not c.is_transcoder or c.kind not in ACTIVATIONS:
        why = " (circuit-tracer 0.5 loads no TopK; train batchtopk or jumprelu)" if "topk" in c.kind else ""
        raise ValueError(f"circuit-tracer holds per-layer transcoders of kinds {sorted(ACTIVATIONS)}; this is a "
                         f"{c.kind} {'transcoder' if c.is_transcoder else 'SAE'}{why}")
    if c.d_out != c.d_in or c.input_norm == "layer_norm":
        raise ValueError(f"circuit-tracer's transcoders map d_model to d_model on raw inputs; this one has "
                         f"d_in={c.d_in}, d_out={c.d_out}, input_norm={c.input_norm!r}")
    m_in, m_out = HOOK_RE.match(c.hook or ""), HOOK_RE.match(c.hook_out or "")
    if m_in is None or m_out is None or m_in.group(1) != m_out.group(1):
        raise ValueError(f"circuit-tracer needs both hooks in one block (blocks.L.<input> -> blocks.L.<output>); "
                         f"this transcoder has hook={c.hook!r}, hook_out={c.hook_out!r}")
    tensors = {"W_enc": d.enc_weight, "W_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec}
    if ACTIVATIONS[c.kind] == "jumprelu":
        tensors["activation_function.threshold"] = d.threshold
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip
    hooks = (TL_NAMES.get(m_in.group(2), m_in.group(2)), m_out.group(2))
    return int(m_in.group(1)), {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, hooks


def circuit_tracer_problem(d: Any) -> str | None:
    """Why circuit-tracer cannot hold transcoder ``d`` written on its own, or None when it can."""
    try:
        layer, _, _ = _layer_tensors(d)
    except ValueError as e:
        return str(e)
    if layer:  # a set is indexed by layer from 0: one transcoder alone is a set only at layer 0
        return (f"circuit-tracer loads a set covering layers 0..{layer} (the position in its list is the layer); "
                f"layers {list(range(layer))} have no transcoder: export one per layer together "
                "(saekit.formats.export([...], path, to='circuit_tracer'))")
    return None


def export_circuit_tracer(transcoders: Any | Sequence[Any], path: str | Path) -> Path:
    """Write directory ``path``: ``layer_{L}.safetensors`` for each transcoder (one per
    layer, layers 0..N-1, all on the same pair of block-relative hooks) and the
    ``config.yaml`` of the set. A single transcoder is a set only at layer 0."""
    ds = list(transcoders) if isinstance(transcoders, (list, tuple)) else [transcoders]
    layers: dict[int, dict[str, torch.Tensor]] = {}
    hooks, first = set(), ds[0].cfg
    for d in ds:
        layer, tensors, h = _layer_tensors(d)
        if layer in layers:
            raise ValueError(f"two transcoders for layer {layer}; circuit-tracer's set holds one per layer")
        layers[layer], hooks = tensors, hooks | {h}
    if len(hooks) > 1:
        raise ValueError(f"the transcoders read and write different hooks {sorted(hooks)}; circuit-tracer's set "
                         "has one feature_input_hook and one feature_output_hook")
    missing = sorted(set(range(max(layers) + 1)) - set(layers))
    if missing:
        raise ValueError(f"circuit-tracer loads a set covering layers 0..{max(layers)} (the position in its "
                         f"list is the layer); layers {missing} have no transcoder: export one per layer together")
    (hook_in, hook_out), = hooks
    names = [f"layer_{layer}.safetensors" for layer in sorted(layers)]
    config = {"model_kind": "transcoder_set", "model_name": first.model,
              "scan": f"saekit-{first.kind}-{first.d_dict}", "feature_input_hook": hook_in,
              "feature_output_hook": hook_out}
    # JSON scalars are valid YAML, so json.dumps quotes every value safely. The files are
    # named relative to this directory: circuit-tracer opens them from the current one.
    yaml = "".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items())
    yaml += "transcoders:\n" + "".join(f"  - {json.dumps(n)}\n" for n in names)
    with atomic_directory(path) as tmp:
        for layer, name in zip(sorted(layers), names, strict=True):
            save_file(layers[layer], str(tmp / name))
        (tmp / "config.yaml").write_text(yaml)
    return Path(path)
