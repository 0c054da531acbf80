"""Stable regions (Janiak, Karwowski, Mangat, Giglemiani, Petrova & Heimersheim 2024,
arXiv 2409.17113; code ``jettjaniak/reometry``): does the model's output move in jumps
as one activation slides linearly towards another?

The method, as the authors' ``scripts/interpolate.py`` and ``max_deriv_*.py`` run it:

1. Sample prompts of ``prompt_len`` tokens; consecutive samples form the pairs
   ``(p_A, p_B)``. ``A`` and ``B`` are the activations after block 0 (HF
   ``transformer.h.0``'s output, TransformerLens ``blocks.0.hook_resid_post``) at the
   last position of ``p_A`` and ``p_B``.
2. Run ``p_A`` with that activation replaced by ``X(α) = A + α(B − A)`` for ``α`` in
   ``linspace(0, 1, n_steps)``, and read the final-layer hidden state at the same
   position after the final norm (HF ``hidden_states[-1]``; ``ln_final.hook_out``).
3. ``d(α) = ‖F(X(α)) − F_clean(p_A)‖₂``; the relative curve is ``r(α) = d(α)/d(1)``.
4. ``sharpness = max_k (r(α_{k+1}) − r(α_k)) · (n_steps − 1)``, the largest slope of
   ``r``, i.e. ``max_α d'(α)/d(1)`` in finite differences. A straight line gives 1;
   a curve that is flat inside regions and jumps at a boundary gives much more.
5. Report the median ``r(α)`` curve and the median and IQR of the sharpness.

The control (the paper's finding 2: randomly initialised models give linear curves) is
the model's random-init twin: the same architecture and config, freshly initialised
with a fixed seed, built through the same loading path as :func:`saekit.load_model`
(native checkpoints: TransformerLens' native boot with ``init_weights``; Hugging Face
models: ``from_config``, as the authors' ``reinit_model.py`` does), so hooks and
weight processing match. The twin interpolates between its own activations of the
same prompts.

Throughput: the ``n_steps`` interpolation points of ``batch_size`` pairs are stacked
along the batch axis of one forward pass, and the pass stops right after the read-out
hook (the unembedding is never computed).

Deviations from the authors' code, and why:

- The demo LM always saw BOS at position 0 in training, so demo prompts keep it
  (``prepend_bos``); the GPT-2 recipe turns it off, as the authors ran GPT-2.
- Prompts come from windows of the data source shuffled with ``seed``, keeping only
  windows whose patched position is a real token (not padding or a document
  separator); the authors sampled 10-token windows of concatenated Gutenberg books.
- Pairs whose ``d(1)`` is numerically zero (an identical pair, or an output that does
  not react at all) have no relative curve; they get NaN sharpness and are counted in
  ``n_degenerate_*`` instead of being averaged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.harvest import model_lock
from saekit.data import get_tokenizer, load_tokens, special_ids, token_mask
from saekit.evals.common import EvalConfig, EvalResult
from saekit.gguf import resolve_model_dir
from saekit.models import (
    HookedModel,
    boot_native,
    is_native_dir,
    load_model,
    load_tokenizer,
    model_device,
    model_processing,
    read_native_config,
    resolve_device,
    validate_hook,
)
from saekit.report import figure_png

#: Control models, by row label: the trained model and its random-init twin.
TRAINED, RANDOM_INIT = "trained", "random-init"
#: d(1) at or below this fraction of ‖F_clean(p_A)‖ is float noise, not a curve.
DEGENERATE_D1 = 1e-5


@dataclass
class Config(EvalConfig):
    """Stable regions. Defaults are the demo-LM settings (``eval/stable_regions_demo.toml``);
    ``eval/stable_regions_gpt2.toml`` has the paper's GPT-2 small settings.

    Inherited fields not used here: ``dictionaries`` (stable regions are a property of
    the model; it must stay empty), ``n_tokens`` and ``ctx_len`` (the prompts are
    ``n_pairs + 1`` windows of ``prompt_len`` tokens).
    """

    hook: str = "blocks.0.hook_resid_post"
    """Where the activation is replaced: the residual stream after block 0, as the paper."""
    read_hook: str = "ln_final.hook_out"
    """Where the output is read: the final norm's output (HF ``hidden_states[-1]``). With
    ``processing = "hooked"`` the norm's scale and bias are folded into the unembedding,
    so this is the normalised residual; ``"raw"`` keeps them, as the authors' HF runs."""
    position: int = -1
    """Token position patched and read (negative counts from the end); the paper's last."""
    n_pairs: int = 1000
    """Prompt pairs (the paper: 1000); ``n_pairs + 1`` prompts, consecutive ones paired."""
    prompt_len: int = 10
    """Tokens per prompt, BOS included when ``prepend_bos`` (the paper: 10, no BOS)."""
    prepend_bos: bool = True
    """Keep the BOS token at position 0 (the demo LM was trained with it)."""
    n_steps: int = 30
    """Interpolation points ``α = linspace(0, 1, n_steps)`` (the authors' saved runs: 30)."""
    batch_size: int = 16
    """Pairs per forward pass; each stacks its ``n_steps`` points, so a forward runs
    ``batch_size × n_steps`` prompts."""
    control: bool = True
    """Also run the random-init twin of the same architecture (the paper's control)."""
    control_seed: int = 0
    """Seed of the twin's weights. The demo LM was trained from seed 0 through the same
    native boot, so with 0 its twin is the demo LM's own step-0 weights."""
    processing: str = "hooked"
    """Weight processing for Hugging Face models (``saekit.load_model``); native
    checkpoints run as trained."""
    text_column: str = "text"
    """Text column of a dataset source (Gutenberg's is ``TEXT``)."""


class Curves(NamedTuple):
    """One model's interpolation results over the prompt pairs."""

    distance: Tensor
    """float32 ``[n_pairs, n_steps]``: ``d(α) = ‖F(A + α(B − A)) − F_clean(p_A)‖``."""
    input_distance: Tensor
    """float32 ``[n_pairs]``: ``‖B − A‖`` at the patched hook."""
    clean_norm: Tensor
    """float32 ``[n_pairs]``: ``‖F_clean(p_A)‖``, the scale that decides degeneracy."""


class Sharpness(NamedTuple):
    """The relative curves and their sharpness (see the module docstring)."""

    relative: Tensor
    """float32 ``[n_pairs, n_steps]``: ``r(α) = d(α)/d(1)``; NaN rows for degenerate pairs."""
    sharpness: Tensor
    """float32 ``[n_pairs]``: ``max_k (r_{k+1} − r_k)·(n_steps − 1)``; 1 for a straight line."""
    jump_alpha: Tensor
    """float32 ``[n_pairs]``: the midpoint α of the steepest step."""
    degenerate: Tensor
    """bool ``[n_pairs]``: ``d(1) ≤ 1e-5·‖F_clean(p_A)‖``, so r is undefined."""


# --------------------------------------------------------------------------- models


def random_init_twin(spec: Any, seed: int = 0, device: Any = None, dtype: Any = None,
                     processing: str = "hooked") -> Any:
    """The architecture of ``spec`` with freshly initialised weights, loaded as
    :func:`saekit.load_model` would load ``spec`` (same hooks, same processing).

    Parameters
    ----------
    spec
        A native checkpoint directory (booted from its ``config.json`` with
        ``init_weights`` and ``seed``: TransformerLens' native initialisation, the one
        the checkpoint was trained from), or a Hugging Face name or directory (built
        with ``from_config`` under ``torch.manual_seed(seed)``, as the paper's
        ``reinit_model.py``; needs the config in the HF cache or the network).
    seed
        Fixes the weights; the global RNG is left as it was.
    """
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"random_init_twin needs a model spec (path or name) to rebuild, got "
                        f"{type(spec).__name__}; set Config.model to the model's path or name")
    dev = resolve_device(device)
    path = Path(spec).expanduser()
    if is_native_dir(path):
        cfg = read_native_config(path)
        tok = load_tokenizer(path / "tokenizer.json", cfg.get("tokenizer"))
        twin = boot_native({**cfg, "init_weights": True, "seed": seed}, tokenizer=tok, device=dev,
                           dtype=dtype, name=f"{path.name}-random-init")
        used = "native"
    else:
        from transformer_lens.model_bridge import TransformerBridge

        source = resolve_model_dir(spec) or spec  # a built-in name or a GGUF: its converted directory
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            twin = TransformerBridge.boot_transformers(str(source), load_weights=False)
        # load_weights=False leaves the model on the CPU, in its config dtype, training mode
        want = dtype or torch.float32
        if dev.type != "cpu" or next(twin.parameters()).dtype != want:
            twin = twin.to(dev).to(want)
        if processing == "hooked":
            twin.enable_compatibility_mode(disable_warnings=True)
        used = processing
    twin.eval()
    twin.saekit_spec = f"{spec} [random init, seed {seed}]"
    twin.saekit_processing = used
    return twin


def _bootstrap_medians(x: Tensor, seed: int, n_boot: int = 1000) -> Tensor:
    """Medians of ``n_boot`` resamples of the pairs (pairs are independent items)."""
    x = x[~torch.isnan(x)].double()
    if len(x) < 2:
        return torch.full((2,), math.nan, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return x[torch.randint(len(x), (n_boot, len(x)), generator=g)].median(dim=1).values


# --------------------------------------------------------------------------- prompts


def sample_prompts(model: HookedModel, cfg: Config) -> Tensor:
    """``[n_pairs + 1, prompt_len]`` prompts: windows of ``cfg.data`` shuffled with
    ``cfg.seed``, each with a real token at the patched position and no padding."""
    n_prompts = cfg.n_pairs + 1
    ctx = cfg.prompt_len + (0 if cfg.prepend_bos else 1)  # load_tokens leads with BOS
    pool = 8 * n_prompts  # windows to draw from: prompts from more of the text than n_prompts
    windows = load_tokens(cfg.data, model, n_tokens=pool * ctx, ctx_len=ctx, seed=cfg.seed,
                          text_column=cfg.text_column)
    _, pad = special_ids(model)
    real = token_mask(windows, model)  # False at BOS, separators, padding
    if not cfg.prepend_bos:
        windows, real = windows[:, 1:], real[:, 1:]
    windows = windows[real[:, cfg.position] & (windows != pad).all(1)]
    if len(windows) < n_prompts:
        raise ValueError(f"data {cfg.data!r} gave {len(windows)} usable {cfg.prompt_len}-token prompts; "
                         f"n_pairs={cfg.n_pairs} needs {n_prompts}")
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(cfg.seed))
    return windows[order[:n_prompts]]


# --------------------------------------------------------------------------- forward passes


class _StopForward(Exception):
    """Raised from the read-out hook: nothing after it is needed."""


def _run_patched(model: HookedModel, tokens: Tensor, hook: str, read_hook: str, position: int,
                 patch: Tensor | None) -> tuple[Tensor, Tensor]:
    """One forward of ``tokens [rows, seq]`` with the activation at ``(hook, position)``
    replaced by ``patch [rows, d]`` (None: the clean run). Returns the activation seen
    at the hook and the read-out, both ``[rows, d]`` at ``position``."""
    seen: dict[str, Tensor] = {}

    def write(x: Tensor, hook: Any = None) -> Tensor:
        flat = x.reshape(*x.shape[:2], -1)  # attn.hook_z is [b, s, heads, d_head]
        seen["write"] = flat[:, position].float().clone()
        if patch is None:
            return x
        flat = flat.clone()
        flat[:, position] = patch.to(flat.dtype)
        return flat.reshape(x.shape)

    def read(x: Tensor, hook: Any = None) -> None:
        seen["read"] = x.reshape(*x.shape[:2], -1)[:, position].float().clone()
        raise _StopForward

    try:
        with model_lock(model):
            model.run_with_hooks(tokens, fwd_hooks=[(hook, write), (read_hook, read)])
    except _StopForward:
        pass
    if "read" not in seen or "write" not in seen:
        raise RuntimeError(f"hooks {hook!r} and {read_hook!r} did not both fire in the forward pass")
    return seen["write"], seen["read"]


@torch.inference_mode()
def interpolation_curves(model: HookedModel, prompts: Tensor, hook: str, read_hook: str, n_steps: int,
                         position: int = -1, batch_size: int = 16, progress: bool = False,
                         desc: str = "interpolate") -> Curves:
    """``d(α)`` for the pairs ``(prompts[i], prompts[i+1])``, ``n_steps`` α per pair.

    A clean pass gives ``A``, ``B`` and ``F_clean``; then each forward runs
    ``batch_size`` pairs × ``n_steps`` points stacked along the batch axis.
    """
    dev = model_device(model)
    clean_write, clean_read = [], []
    rows = batch_size * n_steps  # the clean pass runs as many prompts per forward
    for lo in range(0, len(prompts), rows):
        w, r = _run_patched(model, prompts[lo:lo + rows].to(dev), hook, read_hook, position, None)
        clean_write.append(w)
        clean_read.append(r)
    acts, reads = torch.cat(clean_write), torch.cat(clean_read)
    a, b, f_clean = acts[:-1], acts[1:], reads[:-1]
    n_pairs = len(a)
    alphas = torch.linspace(0, 1, n_steps, device=dev)
    distance = torch.empty(n_pairs, n_steps)
    starts = range(0, n_pairs, batch_size)
    if progress:
        starts = tqdm(starts, desc=desc, unit="batch")
    for lo in starts:
        hi = min(lo + batch_size, n_pairs)
        x = a[lo:hi, None] + alphas[None, :, None] * (b[lo:hi] - a[lo:hi])[:, None]  # [c, S, d]
        tokens = prompts[lo:hi].to(dev).repeat_interleave(n_steps, dim=0)  # row = (pair, α)
        _, out = _run_patched(model, tokens, hook, read_hook, position, x.flatten(0, 1))
        out = out.view(hi - lo, n_steps, -1)
        distance[lo:hi] = (out - f_clean[lo:hi, None]).norm(dim=-1).cpu()
    return Curves(distance, (b - a).norm(dim=-1).cpu(), f_clean.norm(dim=-1).cpu())


def sharpness(curves: Curves) -> Sharpness:
    """Relative curves and sharpness, as the authors' ``max_deriv_checkpoints.py``."""
    d = curves.distance.double()
    n_steps = d.shape[1]
    degenerate = d[:, -1] <= DEGENERATE_D1 * curves.clean_norm.double()
    rel = d / d[:, -1:].where(~degenerate[:, None], torch.nan)
    steps = rel.diff(dim=1)
    k = steps.nan_to_num(-math.inf).argmax(dim=1)
    sharp = steps.gather(1, k[:, None])[:, 0] * (n_steps - 1)
    jump = (k.double() + 0.5) / (n_steps - 1)
    return Sharpness(rel.float(), sharp.float(), jump.where(~degenerate, torch.nan).float(), degenerate)


# --------------------------------------------------------------------------- run


def _check(cfg: Config) -> None:
    if cfg.dictionaries:
        raise ValueError(f"Config.dictionaries must be empty for stable-regions (a property of the "
                         f"model, not of a dictionary), got {cfg.dictionaries!r}")
    for name, low in (("n_pairs", 1), ("prompt_len", 2), ("n_steps", 3), ("batch_size", 1)):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"Config.{name} must be an integer ≥ {low}, got {v!r}")
    if not -cfg.prompt_len <= cfg.position < cfg.prompt_len:
        raise ValueError(f"Config.position must index a {cfg.prompt_len}-token prompt "
                         f"(−{cfg.prompt_len}..{cfg.prompt_len - 1}), got {cfg.position}")
    if cfg.processing not in ("hooked", "raw"):
        raise ValueError(f"Config.processing must be 'hooked' or 'raw', got {cfg.processing!r}")
    if cfg.position % cfg.prompt_len == 0 and cfg.prepend_bos:
        raise ValueError("Config.position points at BOS (position 0), which is never patched")


def _check_hooks(model: HookedModel, cfg: Config) -> None:
    validate_hook(model, cfg.hook)
    if cfg.read_hook not in model.hook_dict:
        near = sorted(h for h in model.hook_dict if h.startswith(("ln_final", "unembed")) or "resid_post" in h)
        raise ValueError(f"Config.read_hook {cfg.read_hook!r} is not a hook of this model; "
                         f"candidates: {near[:12]}")


def _quartiles(x: Tensor) -> tuple[float, float, float]:
    ok = x[~torch.isnan(x)].double()
    if not len(ok):
        return (math.nan,) * 3
    q = torch.quantile(ok, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(q[0]), float(q[1]), float(q[2])


def run(cfg: Config, model: Any = None, progress: bool = False) -> EvalResult:
    """Stable regions of ``cfg.model`` (or ``model``) and, with ``cfg.control``, of its
    random-init twin (rebuilt from the ``saekit_spec`` that :func:`saekit.load_model`
    records on ``model``, else from ``cfg.model``).

    Returns
    -------
    EvalResult named ``stable-regions``: one row per model × pair (``sharpness``,
    ``jump_alpha``, ``d1``, ``input_distance``, the prompts' last tokens); summary with
    the median and IQR of the sharpness per model, their ratio, the one-sided
    Mann–Whitney p-value (trained sharper than random-init) and the median ``r(α)``
    curves; the curves and the sharpness histograms as ``stable_regions.png``.
    """
    _check(cfg)
    if model is None:
        model = load_model(cfg.model, device=cfg.device, processing=cfg.processing)
    _check_hooks(model, cfg)
    prompts = sample_prompts(model, cfg)
    models = {TRAINED: model}
    if cfg.control:
        spec = getattr(model, "saekit_spec", None) or cfg.model
        dtype = next(model.parameters()).dtype
        processing = model_processing(model)  # "native" for native checkpoints, which ignore it
        models[RANDOM_INIT] = random_init_twin(spec, cfg.control_seed, model_device(model), dtype,
                                               processing if processing != "native" else cfg.processing)
    results = {}
    for name, m in models.items():
        curves = interpolation_curves(m, prompts, cfg.hook, cfg.read_hook, cfg.n_steps, cfg.position,
                                      cfg.batch_size, progress, desc=f"interpolate ({name})")
        results[name] = (curves, sharpness(curves))

    tok = get_tokenizer(model)
    last = [tok.decode([int(t)]) for t in prompts[:, cfg.position]]
    rows = []
    for name, (curves, s) in results.items():
        for i in range(cfg.n_pairs):
            rows.append({"model": name, "pair": i, "sharpness": float(s.sharpness[i]),
                         "jump_alpha": float(s.jump_alpha[i]), "d1": float(curves.distance[i, -1]),
                         "input_distance": float(curves.input_distance[i]),
                         "degenerate": bool(s.degenerate[i]), "last_token_a": last[i], "last_token_b": last[i + 1]})

    alphas = torch.linspace(0, 1, cfg.n_steps)
    summary: dict[str, Any] = {"n_pairs": cfg.n_pairs, "n_steps": cfg.n_steps}
    medians, boots = {}, {}
    for name, (_, s) in results.items():
        q25, med, q75 = _quartiles(s.sharpness)
        medians[name] = med
        boots[name] = _bootstrap_medians(s.sharpness, cfg.seed)
        summary.update({f"{name}_sharpness_median": med, f"{name}_sharpness_median_se": float(boots[name].std()),
                        f"{name}_sharpness_q25": q25,
                        f"{name}_sharpness_q75": q75, f"n_degenerate_{name}": int(s.degenerate.sum())})
    if RANDOM_INIT in results:
        summary["sharpness_ratio_se"] = float((boots[TRAINED] / boots[RANDOM_INIT]).std())
        from scipy.stats import mannwhitneyu

        tr, rnd = (results[k][1].sharpness for k in (TRAINED, RANDOM_INIT))
        tr, rnd = tr[~torch.isnan(tr)].numpy(), rnd[~torch.isnan(rnd)].numpy()
        summary["sharpness_ratio"] = medians[TRAINED] / medians[RANDOM_INIT]
        summary["mannwhitney_p_trained_sharper"] = (float(mannwhitneyu(tr, rnd, alternative="greater").pvalue)
                                                    if len(tr) and len(rnd) else math.nan)
    for name, (_, s) in results.items():
        summary[f"{name}_median_curve"] = [round(float(v), 3) for v in s.relative.nanmedian(dim=0).values]

    settings = asdict(cfg) | {"alphas": [round(float(a), 6) for a in alphas],
                              "models": {k: str(getattr(m, "saekit_spec", k)) for k, m in models.items()}}
    return EvalResult("stable-regions", rows, summary, settings,
                      {"stable_regions.png": _figure(results, alphas, cfg)})


def _figure(results: dict[str, tuple[Curves, Sharpness]], alphas: Tensor, cfg: Config) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    ax_curve, ax_hist = fig.subplots(1, 2)
    colours = {TRAINED: "tab:blue", RANDOM_INIT: "tab:grey"}
    finite = [s.sharpness[~torch.isnan(s.sharpness)] for _, s in results.values()]
    hi = max([float(f.max()) for f in finite if len(f)] + [2.0])
    bins = np.geomspace(0.9, hi * 1.05, 40)  # sharpness ≥ 1 up to float noise
    for name, (_, s) in results.items():
        ok = s.relative[~s.degenerate]
        if len(ok):
            q = torch.quantile(ok.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
            ax_curve.plot(alphas, q[1], color=colours[name], label=f"{name} (median)")
            ax_curve.fill_between(alphas, q[0], q[2], color=colours[name], alpha=0.2, label=f"{name} (IQR)")
        f = s.sharpness[~torch.isnan(s.sharpness)].numpy()
        ax_hist.hist(f, bins=bins, color=colours[name], alpha=0.6, label=f"{name} (median {np.median(f):.2f})"
                     if len(f) else name)
    ax_curve.plot([0, 1], [0, 1], ":", color="k", lw=0.8, label="linear")
    ax_curve.set(xlabel="α", ylabel="r(α) = d(α) / d(1)", title=f"relative output change, {cfg.hook}")
    ax_curve.legend(fontsize="small")
    ax_hist.axvline(1.0, color="k", ls=":", lw=0.8)
    ax_hist.set(xscale="log", xlabel="sharpness = max d'(α) / d(1)", ylabel="pairs",
                title=f"sharpness over {cfg.n_pairs} pairs, {cfg.n_steps} steps")
    ticks = [t for t in (1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200, 500) if t <= hi * 1.05]
    ax_hist.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax_hist.set_xticks([], minor=True)
    ax_hist.legend(fontsize="small")
    fig.tight_layout()
    return figure_png(fig)


__all__ = ["Config", "Curves", "Sharpness", "interpolation_curves", "random_init_twin", "run",
           "sample_prompts", "sharpness"]
