"""Export a transcoder in the layout circuit-tracer loads (safety-research/circuit-tracer).

circuit-tracer's ``load_transcoder(path, layer)`` reads one safetensors file per layer with
``W_enc [d_transcoder, d_model]`` (``F.linear`` orientation), ``W_dec [d_transcoder,
d_model]``, ``b_enc``, ``b_dec``, optionally ``activation_function.threshold`` (JumpReLU),
``k`` (TopK) and ``W_skip [d_model, d_model]`` (added as ``x @ W_skip.T``), and
``load_transcoder_set`` takes the per-layer paths with the block-relative
``feature_input_hook``/``feature_output_hook`` of a ``config.yaml``. This writes
``layer_{L}.safetensors`` and that ``config.yaml`` (one layer; circuit-tracer's set wants
every layer 0..L, so a user merges the layers of several exports).

Deviations, and why: circuit-tracer's TopK keeps the k largest pre-activations without
a ReLU (negative ones pass when fewer than k are positive), saekit's codes are ReLU'd;
the two agree wherever a token has at least k positive pre-activations, which a trained
TopK transcoder nearly always has. Its JumpReLU is ``x·(x > θ)``, saekit's
``ReLU(x)·(x > θ)``: equal for the non-negative thresholds saekit trains.
Not checked against circuit-tracer itself (it is not installed beside saekit's peers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from saekit.fileio import atomic_directory
from saekit.models import HOOK_RE  # the TransformerLens hook grammar saekit uses

#: saekit hook names that HookedTransformer (which circuit-tracer hooks) calls otherwise:
#: the MLP's normed input is ``ln2.hook_normalized`` there, as in circuit-tracer's Gemma configs.
TL_NAMES = {"ln2.hook_out": "ln2.hook_normalized"}

#: saekit kinds circuit-tracer can run, and its activation name for each.
ACTIVATIONS = {"relu": "relu", "jumprelu": "jumprelu", "batchtopk": "jumprelu", "topk": "topk"}


def circuit_tracer_problem(d: Any) -> str | None:
    """Why circuit-tracer cannot hold dictionary ``d``, or None when it can."""
    c = d.cfg
    if not c.is_transcoder or c.kind not in ACTIVATIONS:
        return (f"circuit-tracer holds per-layer transcoders of kinds {sorted(ACTIVATIONS)}; this is a "
                f"{c.kind} {'transcoder' if c.is_transcoder else 'SAE'}")
    if c.d_out != c.d_in or c.input_norm == "layer_norm":
        return (f"circuit-tracer's transcoders map d_model to d_model on raw inputs; this one has "
                f"d_in={c.d_in}, d_out={c.d_out}, input_norm={c.input_norm!r}")
    m_in, m_out = HOOK_RE.match(c.hook or ""), HOOK_RE.match(c.hook_out or "")
    if m_in is None or m_out is None or m_in.group(1) != m_out.group(1):
        return (f"circuit-tracer needs both hooks in one block (blocks.L.<input> -> blocks.L.<output>); "
                f"this transcoder has hook={c.hook!r}, hook_out={c.hook_out!r}")
    return None


def export_circuit_tracer(d: Any, path: str | Path) -> Path:
    """Write transcoder ``d`` to directory ``path`` (``layer_{L}.safetensors`` +
    ``config.yaml``), or raise a ValueError saying what circuit-tracer cannot hold."""
    problem = circuit_tracer_problem(d)
    if problem is not None:
        raise ValueError(problem)
    c = d.cfg
    m_in, m_out = HOOK_RE.match(c.hook), HOOK_RE.match(c.hook_out)
    layer = int(m_in.group(1))
    tensors = {"W_enc": d.enc_weight, "W_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec}
    act = ACTIVATIONS[c.kind]
    if act == "jumprelu":
        tensors["activation_function.threshold"] = d.threshold
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
    if act == "topk":
        tensors["k"] = torch.tensor(c.k)
    name = f"layer_{layer}.safetensors"
    config = {"model_name": c.model, "scan": f"saekit-{c.kind}-{c.d_dict}",
              "feature_input_hook": TL_NAMES.get(m_in.group(2), m_in.group(2)), "feature_output_hook": m_out.group(2),
              "activation": act, **({"k": c.k} if act == "topk" else {}), "transcoders": [name]}
    # JSON scalars are valid YAML, so json.dumps quotes every value safely.
    yaml = "".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items() if k != "transcoders")
    yaml += "transcoders:\n" + "".join(f"  - {json.dumps(p)}\n" for p in config["transcoders"])
    with atomic_directory(path) as tmp:
        save_file(tensors, str(tmp / name))
        (tmp / "config.yaml").write_text(yaml)
    return Path(path)
