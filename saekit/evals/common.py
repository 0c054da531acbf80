"""What every evaluator shares: the result table, KL per token, batched perturbed forwards.

Conventions (DESIGN.md): KL is KL(P_clean ‖ Q_perturbed) over the next-token
distribution, per token, at positions whose input is a real token (not BOS, separators
or padding); position 0 (BOS) is never perturbed. Every evaluator returns an
:class:`EvalResult`, which is :class:`saekit.report.Result`: a tidy table (one row per
item, one column per metric), a summary, the config, provenance and plots, saved by
``save(dir)`` as CSV, JSON, Markdown and HTML.

Throughput: many directions × strengths share one forward pass. :func:`perturbation_kl`
stacks the variants along the batch axis (``max_rows`` rows per forward), so the cost
is that of a plain batched forward of the same size (``eval/bench_evals.py``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.data import token_mask
from saekit.formats import load_dictionary
from saekit.models import HookedModel, hook_width, load_model, model_device
from saekit.report import Result


@dataclass
class EvalConfig:
    """Fields every evaluator's config has."""

    model: str = "checkpoints/demo-lm"
    """Model spec for ``saekit.load_model``."""
    hook: str = "blocks.2.hook_resid_pre"
    """Hook the evaluator perturbs or reads (TransformerLens name)."""
    dictionaries: list[str] | None = None
    """Dictionaries (paths, registry ids) whose features are evaluated, where the
    evaluator uses them; each must be fitted on ``hook`` (or its evaluator says how
    it maps)."""
    data: str = "demo:heldout"
    """Text source for ``saekit.load_tokens``."""
    n_tokens: int = 8192
    ctx_len: int = 128
    batch_size: int = 16
    """Windows per forward pass (perturbation variants are stacked on top of it)."""
    seed: int = 0
    device: str | None = None
    """Default: cuda when present, else cpu."""



#: An evaluator's output is the one result type of every analysis: ``name`` (the
#: evaluator: ``sensitivity``, ``synthetic``, ``steering``, ``stable-regions``, ``layers``),
#: ``rows`` (one row per direction family × strength, feature, pair, ...), ``summary``,
#: ``config`` (the config dataclass as a dict plus derived values such as the median
#: activation norm), ``figures``; ``save(dir)`` writes ``{name}.csv``, ``{name}.json``,
#: the PNGs, ``report.md`` and ``index.html``. Kept under this name for the evaluators.
EvalResult = Result


def kl_per_token(clean_logp: Tensor, logp: Tensor) -> Tensor:
    """KL(P ‖ Q) over the last axis from log-probabilities (float32 or better)."""
    return (clean_logp.exp() * (clean_logp - logp)).sum(-1)


def _kl_from_logits(P: Tensor, clean_logp: Tensor, logits: Tensor, top: Tensor) -> Tensor:
    """KL(P ‖ softmax(logits)), in place on ``logits``, accurate for tiny KL.

    With Δ = logits − log P centred under P (Δc = Δ − E_P[Δ]), KL = log E_P[exp(Δc)]
    = log1p(E_P[expm1(Δc)]): no cancellation between terms of the size of the log-probs,
    so KL of 1e-5 keeps its digits in float32 (a log_softmax difference loses them).
    """
    delta = logits.sub_(clean_logp)
    # Δ is log P_Q/P up to a per-token constant of the size of the logits; removing its
    # value at P's top token first keeps E_P[Δ] small, so the rounding of Σ P ≠ 1 does not
    # leak into the centring.
    delta.sub_(delta.gather(-1, top.expand(delta.shape[:-1])[..., None]))
    mean = torch.einsum("...v,...v->...", P, delta)
    return torch.einsum("...v,...v->...", P, delta.sub_(mean[..., None]).expm1_()).log1p_().clamp_min_(0)


def input_mask(tokens: Tensor, model: Any) -> Tensor:
    """Positions whose input is a real token (the ones KL is averaged over)."""
    return token_mask(tokens, model)


@torch.no_grad()
def clean_log_probs(model: HookedModel, tokens: Tensor, batch_size: int = 16) -> Tensor:
    """``[batch, seq, vocab]`` float32 next-token log-probabilities of the untouched model."""
    dev = model_device(model)
    return torch.cat([model(tokens[i:i + batch_size].to(dev)).float().log_softmax(-1).cpu()
                      for i in range(0, len(tokens), batch_size)])


@torch.no_grad()
def perturbation_kl(model: HookedModel, tokens: Tensor, hook: str, deltas: Tensor | Callable[[Tensor], Tensor],
                    n_variants: int | None = None, clean_logp: Tensor | None = None, max_rows: int = 64,
                    progress: bool = False) -> Tensor:
    """KL(P_clean ‖ Q) per token when ``x ← x + δ`` at ``hook``, for many variants at once.

    Parameters
    ----------
    tokens
        ``[batch, seq]`` windows.
    deltas
        ``[n_variants, batch, seq, d]`` perturbations (variant v adds ``deltas[v]`` to the
        activations of every window), or a callable ``f(variant_indices) ->
        [len(indices), batch, seq, d]`` that makes them on demand (saves memory when
        there are many). Position 0 is never perturbed.
    n_variants
        Needed with a callable.
    clean_logp
        The clean log-probabilities (:func:`clean_log_probs`), when already computed.
    max_rows
        Windows per forward pass: variants × windows are stacked along the batch axis.

    Returns
    -------
    ``[n_variants, batch, seq]`` float32 KL per token (0 at position 0; mask with
    :func:`input_mask` before averaging).
    """
    dev = model_device(model)
    B = len(tokens)
    if isinstance(deltas, Tensor):
        if deltas.ndim != 4 or deltas.shape[1:3] != tokens.shape:
            raise ValueError(f"deltas must be [n_variants, {B}, {tokens.shape[1]}, d], got {tuple(deltas.shape)}")
        V = deltas.shape[0]
        table = deltas

        def make(idx: Tensor) -> Tensor:
            return table[idx]
    else:
        if n_variants is None:
            raise ValueError("n_variants is required when deltas is a callable")
        V, make = n_variants, deltas
    if clean_logp is None:
        clean_logp = clean_log_probs(model, tokens)
    P = clean_logp.exp()
    top = P.argmax(-1)
    out = torch.zeros(V, B, tokens.shape[1])
    # Chunks are whole sets of windows (n variants × all B windows) or, when B alone is
    # more than max_rows, slices of one variant's windows: the clean tensors are then
    # views (broadcast over variants), never per-row copies of [seq, vocab].
    per = max(1, max_rows // B) if B <= max_rows else 0
    chunks = ([(v0, min(v0 + per, V), 0, B) for v0 in range(0, V, per)] if per else
              [(v, v + 1, b0, min(b0 + max_rows, B)) for v in range(V) for b0 in range(0, B, max_rows)])
    bar = None
    if progress:
        bar = tqdm(total=V * B, desc=f"perturb {hook}", unit="window")
    for v0, v1, b0, b1 in chunks:
        d = make(torch.arange(v0, v1))[:, b0:b1].flatten(0, 1).to(dev)  # [rows, seq, d]

        def add(x: Tensor, hook: Any = None, d: Tensor = d) -> Tensor:
            flat = x.reshape(*x.shape[:2], -1)
            new = flat + d.to(flat.dtype)
            new[:, 0] = flat[:, 0]
            return new.reshape(x.shape)

        with model.hooks(fwd_hooks=[(hook, add)]):
            logits = model(tokens[b0:b1].repeat(v1 - v0, 1).to(dev)).float().cpu()
        logits = logits.view(v1 - v0, b1 - b0, *logits.shape[1:])
        out[v0:v1, b0:b1] = _kl_from_logits(P[b0:b1], clean_logp[b0:b1], logits, top[b0:b1])
        if bar is not None:
            bar.update((v1 - v0) * (b1 - b0))
    if bar is not None:
        bar.close()
    return out


def median_norm(acts: Tensor) -> float:
    """Median L2 norm of activation rows: the unit that scales strengths on any model."""
    return float(acts.float().norm(dim=-1).median())


# -- shared by the evaluators: Gaussian baselines, dictionaries, settings -------------

#: Σ's ridge as a fraction of the mean per-dimension variance when ``cov_ridge`` is None.
RELATIVE_RIDGE = 5e-4


class CovGaussian(NamedTuple):
    """N(μ, Σ + ridge·I) fitted to activations, sampled through Σ's eigendecomposition."""

    mean: Tensor
    """``[d]`` the activations' mean μ."""
    factor: Tensor
    """``[d, d]`` a square root ``L`` of Σ + ridge·I (``L Lᵀ``); a sample is ``μ + z Lᵀ``."""
    ridge: float
    """What was added to Σ's diagonal."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, len(self.mean), generator=generator, dtype=self.factor.dtype)
        return self.mean + z @ self.factor.T


def fit_gaussian(acts: Tensor, ridge: float | None = None) -> CovGaussian:
    """Fit :class:`CovGaussian` to ``acts [n, d]``; ``ridge`` None: 5e-4 × mean variance."""
    if acts.ndim != 2 or len(acts) < 2:
        raise ValueError(f"need at least 2 activations [n, d] to fit a covariance, got {tuple(acts.shape)}")
    a = acts.double()
    mean = a.mean(0)
    cov = torch.cov(a.T)
    if ridge is None:
        ridge = RELATIVE_RIDGE * float(cov.diagonal().mean())
    if ridge < 0:
        raise ValueError(f"cov_ridge must be >= 0, got {ridge}")
    cov = cov + ridge * torch.eye(len(cov), dtype=cov.dtype)
    evals, evecs = torch.linalg.eigh(cov)
    factor = evecs * evals.clamp_min(0).sqrt()
    return CovGaussian(mean.float(), factor.float(), float(ridge))


def dictionary_name(spec: Any, taken: set[str]) -> str:
    """A short, unique label for a dictionary spec (its directory name) or object."""
    if isinstance(spec, (str, Path)):
        base = str(spec).rstrip("/").split("/")[-1] or str(spec)
    else:
        base = f"{spec.cfg.kind}-{spec.cfg.d_dict}"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def load_dictionaries(specs: list[Any] | None, model: Any, hook: str, field_name: str = "dictionaries",
                      transcoders: Literal["reads", "writes"] | None = None) -> list[tuple[str, Any]]:
    """``[(name, dictionary)]`` for each spec (path, registry id or ``Dictionary``), each
    checked to be fitted on ``hook`` of ``model`` and moved to the model's device.

    ``transcoders`` says how the evaluator uses ``hook``, and so which transcoders it takes:

    - ``"reads"``: codes come from ``hook`` (and where they meet decoder rows, from each
      dictionary's output hook): a transcoder that reads ``hook`` is accepted;
    - ``"writes"``: the evaluator perturbs ``hook`` along decoder rows and encodes each
      dictionary's own input hook: a transcoder that writes ``hook`` is accepted;
    - None: transcoders are refused, with a message that says which evaluators take them.
    """
    if not specs:
        return []
    if isinstance(specs, (str, Path)):
        raise ValueError(f"{field_name} must be a list of dictionaries, got the single value {specs!r}")
    width = hook_width(model, hook)
    out: list[tuple[str, Any]] = []
    taken: set[str] = set()
    for i, spec in enumerate(specs):
        if isinstance(spec, (str, Path)):
            d = load_dictionary(spec)
        elif hasattr(spec, "W_dec") and hasattr(spec, "cfg"):
            d = spec
        else:
            raise TypeError(f"{field_name}[{i}] must be a path, a registry id or a Dictionary, "
                            f"got {type(spec).__name__}")
        where = f"{field_name}[{i}] ({spec if isinstance(spec, (str, Path)) else repr(d)})"
        if getattr(d.cfg, "is_transcoder", False):
            if transcoders is None:
                raise ValueError(f"{where} is a transcoder ({d.cfg.hook} -> {d.cfg.output_hook}); this evaluator "
                                 "does not take transcoders: evaluate it with saekit eval suite, sensitivity, "
                                 "steering or synthetic (at its output hook), saekit compare or metrics.spliced.evaluate")
            if d.cfg.output_hook is None:
                raise ValueError(f"{where} is a transcoder without a recorded output hook; set its hook_out")
            if transcoders == "writes":
                if d.cfg.output_hook != hook:
                    raise ValueError(f"{where} is a transcoder writing {d.cfg.output_hook!r}; this evaluator "
                                     f"perturbs {hook!r} along decoder rows: set hook to {d.cfg.output_hook!r}")
                hook_width(model, d.cfg.hook)  # the input hook it encodes: an unknown one raises here
                out.append((dictionary_name(spec, taken), d.to(model_device(model))))
                continue
            hook_width(model, d.cfg.output_hook)  # an unknown output hook raises here, listing the valid ones
        if d.cfg.hook is not None and d.cfg.hook != hook:
            raise ValueError(f"{where} was fitted on hook {d.cfg.hook!r}, but hook is {hook!r}; set hook to "
                             "the dictionary's hook (its directions live in that hook's space)")
        if d.cfg.d_in != width:
            raise ValueError(f"{where} has d_in={d.cfg.d_in}, but hook {hook!r} has width {width}")
        if d.cfg.hook is None:  # splice needs a recorded hook; the width matched, so record it on a copy
            d = copy.copy(d)
            d.cfg = dataclasses.replace(d.cfg, hook=hook)
        out.append((dictionary_name(spec, taken), d.to(model_device(model))))
    return out


def input_hooks(dicts: list[tuple[str, Any]], hook: str) -> list[str]:
    """The hooks other than ``hook`` that the dictionaries encode (transcoders' inputs),
    to harvest in the same forward pass."""
    return list(dict.fromkeys(d.cfg.hook for _, d in dicts if d.cfg.is_transcoder and d.cfg.hook != hook))


def encode_rows(dictionary: Any, x: Tensor, chunk: int = 8192) -> Tensor:
    """Codes of ``x [n, d_in]`` in chunks (SNMF's NNLS allocates per row)."""
    with torch.no_grad():
        return torch.cat([dictionary.encode(x[i:i + chunk]) for i in range(0, len(x), chunk)]) \
            if len(x) else torch.zeros(0, dictionary.cfg.d_dict)


def check_choices(values: list[str], allowed: tuple[str, ...], field_name: str) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"{field_name}: unknown value(s) {bad}; allowed: {list(allowed)}")


def settings(cfg: EvalConfig) -> dict[str, Any]:
    """The config's fields as a dict, without ``dictionaries`` (which may hold objects;
    ``dataclasses.asdict`` would deep-copy them)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "dictionaries"}


def load_model_for(cfg: EvalConfig, model: Any) -> Any:
    return load_model(cfg.model if model is None else model, device=cfg.device)
