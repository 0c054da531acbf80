"""The SNMF/NMF fitter: exact alternating passes over activations streamed in chunks.

One pass updates each chunk's codes with the dictionary fixed and accumulates the
sufficient statistics ``S_GA = Σ codesᵀ A``, ``S_GG = Σ codesᵀ codes`` and
``s_AA = Σ ‖A‖²``; the dictionary then comes from a Cholesky solve of
``S_GG W = S_GA``, winner-take-all and rescaling, and the loss from the trace
identity ``‖A − G W‖² = s_AA − 2⟨W, S_GA⟩ + ⟨W Wᵀ, S_GG⟩``. No ``[n, d_in]``
product is ever formed, so memory is bounded by the chunk, not the token count.
Codes live on the device (``codes="memory"``), in a bf16 memory map
(``"memmap"``), or are recomputed from scratch by NNLS each pass (``"recompute"``).
Under ``torchrun`` rank r takes chunks r, r + world, ... and the statistics are
summed with ``all_reduce``, so every rank holds the same dictionary.

Solvers (``solver``):

- ``"mu"``: the paper's loop (Shafran, Geiger & Geva; official ``NMFSemiNMF.fit``):
  least-squares dictionary ``(GᵀG + 1e-6·I)⁻¹ GᵀA``, winner-take-all, rescaling to
  unit-norm code columns, one Ding–Li–Jordan multiplicative update of the codes;
- ``"hals"`` (default): the same dictionary step, then a refit of each feature on
  its winner-take-all support by block coordinate descent, and ``code_steps``
  HALS sweeps of the codes (exact coordinate minimisation) instead of one MU step,
  with the sweeps' cross terms as matrix products (``hals_blocked``). It reaches the
  MU loop's error in far fewer passes (``eval/bench_snmf.py``).

Inits (``init``): ``"kmeans"`` (default; the official code's k-means, here in torch),
``"svd"`` and ``"random"``. SVD starts closest to the optimum of the objective and is
about 2.7× faster to the MU loop's error, but the objective has many optima that
differ by a rotation of the codes, and SVD lands on a mixed one: on planted sparse
features both inits reach the same error while the features found match the true
ones with MMCS 0.99 (k-means) against 0.58 (SVD). Interpretable features are the
point, so k-means is the default.

The solvers keep the best dictionary seen, improving when the loss falls below
``best·(1 − tol)`` (relative; the official code uses an absolute 1e-4 on the raw,
scale-dependent loss). Dead features (all-zero code columns, which make the
least-squares step singular and MU's zeros absorbing) are re-seeded with random
codes, never left to produce NaN.

Stopping: :mod:`saekit.training.snmf_stopping` (the ``stop_gain`` rule, ``tol``/``patience``,
``max_iter``, and why).

Checkpoints. ``checkpoint=DIR, checkpoint_every=N`` writes the fit's whole state between
passes, atomically (:mod:`saekit.training.snmf_checkpoint`); a fit started again with
the same arguments resumes from it and ends with the uninterrupted fit's dictionary.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

import saekit.training.snmf_checkpoint as sc
from saekit.dictionaries.snmf import (
    NMF,
    SNMF,
    apg_steps,
    hals_blocked,
    mu_step,
    nnls,
    winner_take_all,
    wta_keep,
)
from saekit.fileio import clean_stale, remove_directory
from saekit.jobs import Interrupted, requested
from saekit.metrics import unit_rows
from saekit.models import resolve_device
from saekit.training.inputs import rows_and_config
from saekit.training.snmf_stopping import (  # noqa: F401  (their old home)
    GAIN_FLOOR,
    GAIN_MIN_PASSES,
    GAIN_SHARE,
    GAIN_WINDOW,
    converged,
    stop_gain_value,
)
from saekit.version import provenance

SOLVERS = ("hals", "apg", "mu")
INITS = ("svd", "random", "kmeans")
CODE_STORES = ("auto", "memory", "memmap", "recompute")


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(*ts: Tensor) -> None:
    if _dist()[1] > 1:
        for t in ts:
            dist.all_reduce(t)


class _Codes:
    """Per-chunk codes: on the device, in a bf16 memory map, or not kept at all."""

    def __init__(self, store: str, sizes: dict[int, int], d_dict: int, device: torch.device):
        self.store, self.d_dict, self.device = store, d_dict, device
        self.mem: dict[int, Tensor] = {}
        self.written: set[int] = set()
        self.disk_bytes = 0
        self._dir = None
        if store == "memmap":
            self._dir = tempfile.TemporaryDirectory(prefix="saekit-snmf-codes-")
            total = sum(sizes.values())
            self.map = torch.from_file(str(Path(self._dir.name) / "codes.bf16"), shared=True,
                                       size=total * d_dict, dtype=torch.bfloat16).view(total, d_dict)
            self.offset, at = {}, 0
            for i, s in sizes.items():
                self.offset[i], at = (at, at + s), at + s
            self.disk_bytes = total * d_dict * 2

    def get(self, i: int) -> Tensor | None:
        if self.store == "memory":
            return self.mem.get(i)
        if self.store == "memmap" and i in self.written:
            lo, hi = self.offset[i]
            return self.map[lo:hi].to(self.device, torch.float32)
        return None

    def put(self, i: int, G: Tensor) -> None:
        if self.store == "memory":
            self.mem[i] = G
        elif self.store == "memmap":
            lo, hi = self.offset[i]
            self.map[lo:hi].copy_(G)
            self.written.add(i)

    def close(self) -> None:
        self.mem.clear()
        if self._dir is not None:
            del self.map
            self._dir.cleanup()
            self._dir = None


def _rows(data: Any, lo: int, hi: int) -> Tensor:
    if isinstance(data, Tensor):
        return data[lo:hi]
    return data[torch.arange(lo, hi)]


def _check_finite(A: Tensor, lo: int, where: str) -> None:
    if torch.isfinite(A.sum()):  # NaN and inf propagate into the sum: a cheap test first
        return
    if not torch.isfinite(A).all():
        bad = lo + int((~torch.isfinite(A)).any(1).nonzero()[0])
        raise ValueError(f"{where}: NaN/inf activation at row {bad}")


def _solve_dictionary(S_GG: Tensor, S_GA: Tensor, solver: str, ridge: float) -> Tensor:
    k = S_GG.shape[0]
    eye = torch.eye(k, dtype=S_GG.dtype, device=S_GG.device)
    if solver == "mu":  # as the official code: an explicit inverse with an absolute ridge
        return torch.linalg.inv(S_GG + ridge * eye) @ S_GA
    reg = S_GG + ridge * S_GG.diagonal().mean().clamp_min(1e-30) * eye
    L, info = torch.linalg.cholesky_ex(reg)
    if int(info):
        return torch.linalg.lstsq(reg, S_GA).solution
    return torch.cholesky_solve(S_GA, L)


def _refit_on_support(W: Tensor, S_GG: Tensor, S_GA: Tensor, nonneg: bool, sweeps: int = 2) -> Tensor:
    """Block coordinate descent on the rows of ``W`` with each row's support (and sign,
    for NMF) fixed: every update is the row's exact minimiser given the others."""
    mask = W != 0
    diag = S_GG.diagonal().clamp_min(1e-30)
    for _ in range(sweeps):
        for j in range(W.shape[0]):
            row = W[j] + (S_GA[j] - S_GG[j] @ W) / diag[j]
            if nonneg:
                row = row.clamp_min(0)
            W[j] = row * mask[j]
    return W


def _nearest(x: Tensor, C: Tensor) -> Tensor:
    """Index of each row's nearest centroid: ``argmin ‖c‖² − 2 x·c`` (one matmul; 2.7×
    faster than ``cdist``, which also takes square roots)."""
    return torch.addmm(C.pow(2).sum(1), x, C.T, alpha=-2).argmin(1)


def kmeans(x: Tensor, k: int, iters: int = 15, generator: torch.Generator | None = None) -> Tensor:
    """Centroids after k-means++ seeding and ``iters`` Lloyd iterations (the official
    code's 15). In torch rather than scikit-learn: sklearn's greedy k-means++ took 10 s
    of a 28 s fit on 8,192 × 512 rows at k = 64 (2-core CPU); this takes a fraction of
    a second and runs on the GPU."""
    n = len(x)
    sq = x.pow(2).sum(1)
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [first]
    d2 = (sq - 2 * (x @ x[first]) + sq[first]).clamp_min(0)
    for _ in range(k - 1):
        p = d2.cpu().double() + 1e-30
        i = int(torch.multinomial(p / p.sum(), 1, generator=generator))
        centres.append(i)
        d2 = torch.minimum(d2, (sq - 2 * (x @ x[i]) + sq[i]).clamp_min(0))
    C = x[centres].clone()
    for _ in range(iters):
        assign = _nearest(x, C)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(C).index_add_(0, assign, x)
        full = counts > 0  # an empty cluster keeps its centre
        C[full] = sums[full] / counts[full, None]
    return C


def fit_snmf(data: Any, d_dict: int, *, kind: str = "snmf", k: int | None = None, seed: int = 0,
             hook: str | None = None, model: Any = None, processing: str | None = None,
             device: Any = None, progress: bool = False, history: list | None = None,
             checkpoint: str | Path | None = None, checkpoint_every: int = 0, **options: Any) -> SNMF:
    """Fit an SNMF (``kind="snmf"``) or NMF (``"nmf"``) dictionary with ``d_dict`` features.

    Parameters
    ----------
    data
        ``[n, d_in]`` tensor, or an activation cache (path, ``ActivationCache`` or
        ``CacheRows``) read chunk by chunk.
    d_dict
        Number of features (at most the data's rank).
    k
        Optional top-k of the codes per token at ``encode`` (not used while fitting).
    options
        ``wta_fraction`` (0.01 for snmf, 1.0 for nmf), ``solver`` (``hals``/``apg``/``mu``),
        ``init`` (``svd``/``random``/``kmeans``), ``chunk_tokens``, ``codes``
        (``auto``/``memory``/``memmap``/``recompute``), ``code_steps`` (HALS sweeps or APG
        steps per pass), ``ridge``, ``firing_threshold``/``encode_tol``/``encode_iter`` for
        ``encode``, and the stopping options (:mod:`saekit.training.snmf_stopping` says why):

        - ``stop_gain`` (0.04): stop once the loss's elasticity with respect to the pass
          count over the last five passes, ``ln(L_{t−5}/L_t) / ln(t/(t−5))``, is below
          it (from pass 10, and once those passes brought at most a tenth of the fall
          since pass 1): running as many passes again would lower the loss by less
          than ``stop_gain · ln 2`` at the current rate. Smaller runs longer to a tighter
          fit; 0 turns the rule off;
        - ``tol`` (1e-4, relative) and ``patience`` (20): a pass improves when its loss
          is below ``best · (1 − tol)``; stop after ``patience`` passes without one;
        - ``max_iter`` (200): at most this many passes.
    history
        A list to which one record per pass is appended (``iter``, ``loss``,
        ``rel_error`` = ‖A − GW‖_F / ‖A‖_F, ``seconds``, ``dead``, and ``gain``, the
        elasticity ``stop_gain`` is compared with, None for the first five passes).
    checkpoint
        A directory for the fit's state (:mod:`saekit.training.snmf_checkpoint`). If it
        holds a checkpoint, the fit resumes from it and ends with exactly the dictionary,
        ``history`` records and metadata of an uninterrupted fit (fp32 on CPU; timings
        aside); one from a different fit (config, options, seed, data, world size) is
        refused with a ValueError. Stale temporary directories that a killed write left
        beside it are removed. The directory is deleted when the fit returns, so save
        the dictionary; a fit killed before that resumes from its last checkpoint, or
        starts over (same result) if it had returned.
    checkpoint_every
        Write the checkpoint after every this many passes (0: never write, though an
        existing checkpoint is still resumed). Each write holds the dictionary and, unless
        ``codes="recompute"``, every chunk's codes (bf16 for ``"memmap"``), gathered on
        rank 0 under ``torchrun``.

    Returns
    -------
    The fitted dictionary: unit-norm ``W_dec`` rows (codes carry the scale), the best
    pass's dictionary, fit statistics in ``cfg.metadata``, among them ``iterations``
    (passes run), ``stopped`` (``"converged"``, ``"stalled"`` or ``"max_iter"``) and
    ``gain`` (the last pass's elasticity).
    """
    cls = {"snmf": SNMF, "nmf": NMF}.get(kind)
    if cls is None:
        raise ValueError(f"fit_snmf fits kinds 'snmf' and 'nmf', got {kind!r}")
    data, cfg = rows_and_config(data, kind, d_dict, k, hook, model, processing, options=options)
    n, d_in = data.shape
    o = cfg.options
    if o["solver"] not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {o['solver']!r}")
    if o["init"] not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {o['init']!r}")
    if o["codes"] not in CODE_STORES:
        raise ValueError(f"codes must be one of {CODE_STORES}, got {o['codes']!r}")
    keep = wta_keep(d_in, o["wta_fraction"])
    if d_dict > min(n, d_in):
        raise ValueError(f"d_dict={d_dict} exceeds the rank the data allows (n_tokens={n}, d_in={d_in})")
    dev = resolve_device(device)
    rank, world = _dist()
    chunk = int(o["chunk_tokens"])
    chunks = [(i, lo, min(lo + chunk, n)) for i, lo in enumerate(range(0, n, chunk))]
    mine = chunks[rank::world]
    if checkpoint_every < 0 or (checkpoint_every and checkpoint is None):
        raise ValueError(f"checkpoint_every={checkpoint_every} needs a checkpoint directory and must be >= 0")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    resumed = None
    if ckpt is not None:
        fit_id = sc.fingerprint(cfg, seed, n, _rows(data, 0, min(n, 64)), world)
        if rank == 0:  # what a killed checkpoint write left beside it
            clean_stale(ckpt.parent, ckpt.name)
        if world > 1:
            dist.barrier()
        resumed = sc.load(ckpt, fit_id, dev)
    store = o["codes"]
    if store == "auto":
        store = "memory" if sum(hi - lo for _, lo, hi in mine) * d_dict * 4 <= 2 << 30 else "memmap"
    codes = _Codes(store, {i: hi - lo for i, lo, hi in mine}, d_dict, dev)
    where = getattr(getattr(data, "cache", None), "path", "data")

    checked: set[int] = set()

    def load(lo: int, hi: int) -> Tensor:
        A = _rows(data, lo, hi).to(dev, torch.float32)
        if lo not in checked:  # once per chunk: the data does not change between passes
            _check_finite(A, lo, str(where))
            checked.add(lo)
        return A

    # -- initial codes -------------------------------------------------------------
    g = torch.Generator().manual_seed(seed)
    proj: Tensor | None = None
    centroids: Tensor | None = None
    if resumed is not None:
        pass  # past pass 0: no initial codes needed
    elif o["init"] == "svd":
        C = torch.zeros(d_in, d_in, dtype=torch.float64, device=dev)
        for _, lo, hi in mine:
            A = load(lo, hi)
            C += (A.T @ A).double()
        _all_reduce(C)
        evals, evecs = torch.linalg.eigh(C)
        evals, evecs = evals.flip(0), evecs.flip(1)
        # fp32 Gram products carry rounding of ~1e-7 relative: eigenvalues below 1e-6 of the
        # largest are noise.
        r = int((evals > evals[0].clamp_min(1e-30) * 1e-6).sum())
        if d_dict > r:
            raise ValueError(f"d_dict={d_dict} exceeds the data's rank ({r}): fewer features, or more data")
        # A = U Σ Vᵀ, so the SVD codes U √Σ are A V Σ^(-1/2).
        proj = (evecs[:, :d_dict] / evals[:d_dict].sqrt().sqrt()).float()
    else:
        idx = torch.randperm(n, generator=g)[:min(n, max(4 * d_dict, 8192))].sort().values
        sample = data[idx].to(dev, torch.float32)
        bad = ~torch.isfinite(sample).all(1)
        if bad.any():
            raise ValueError(f"{where}: NaN/inf activation at row {int(idx[bad.nonzero()[0, 0]])}")
        ev = torch.linalg.eigvalsh((sample.T @ sample).double())
        r = int((ev > ev[-1].clamp_min(1e-30) * 1e-6).sum())  # as for the SVD init below
        if d_dict > r:
            raise ValueError(f"d_dict={d_dict} exceeds the data's rank (about {r} in a sample of "
                             f"{len(idx)} rows): fewer features, or more data")
        if o["init"] == "kmeans":
            centroids = kmeans(sample, d_dict, iters=15, generator=g)

    def initial_codes(i: int, A: Tensor) -> Tensor:
        if proj is not None:
            return (A @ proj).clamp_min(1e-6)
        if centroids is not None:
            near = _nearest(A, centroids)
            return torch.nn.functional.one_hot(near, d_dict).float().clamp_min(1e-6)
        gi = torch.Generator().manual_seed(seed * 1_000_003 + i)
        return torch.rand(len(A), d_dict, generator=gi).clamp_min(1e-6).to(dev)

    # -- passes --------------------------------------------------------------------
    solver, nonneg = o["solver"], cls.NONNEG_DICTIONARY
    W: Tensor | None = None
    Q: Tensor | None = None
    L = 1.0  # λ_max(W Wᵀ), the APG step's inverse
    inv_scale: Tensor | None = None  # rescaling of code columns not yet applied to stored codes
    reseed = torch.zeros(d_dict, dtype=torch.bool, device=dev)
    best, best_W, best_iter, stale = math.inf, None, -1, 0
    lows: list[float] = []  # the lowest loss after each pass, for the stop_gain rule
    stopped, gain = "max_iter", None
    s_AA = None
    t0 = time.time()
    records: list[dict] = []  # the history, kept for checkpoints
    start = 0
    if resumed is not None:
        meta, get = resumed
        W, Q, inv_scale, reseed, s_AA, best_W = map(get, ("W", "Q", "inv_scale", "reseed", "s_AA", "best_W"))
        start, L, best, best_iter, stale, lows, gain, records = (
            meta[x] for x in ("next_pass", "L", "best", "best_iter", "stale", "lows", "gain", "records"))
        g.set_state(get("generator").cpu())
        for i, _, _ in mine if store != "recompute" else []:
            codes.put(i, get(f"codes.{i}").float())
        t0 -= meta["seconds"]
        if history is not None:
            history.extend(records)
    bar = None
    if progress and rank == 0:
        bar = tqdm(total=o["max_iter"], initial=max(start - 1, 0), desc=f"fit {kind}", unit="pass")
    it = 0
    for it in range(start, o["max_iter"] + 1):
        S_GA = torch.zeros(d_dict, d_in, dtype=torch.float64, device=dev)
        S_GG = torch.zeros(d_dict, d_dict, dtype=torch.float64, device=dev)
        aa = torch.zeros((), dtype=torch.float64, device=dev)
        for i, lo, hi in mine:
            A = load(lo, hi)
            if W is None:
                G = initial_codes(i, A)
            else:
                P = A @ W.T
                G = codes.get(i)
                if G is None:  # recompute: NNLS from the clamped least-squares start
                    G = nnls(A, W, P=P, Q=Q, max_iter=o["encode_iter"], tol=o["encode_tol"])
                else:
                    if inv_scale is not None:
                        G = G * inv_scale
                    if reseed.any():
                        gi = torch.Generator().manual_seed(seed * 7919 + it * 1_000_003 + i)
                        G[:, reseed] = torch.rand(len(A), int(reseed.sum()), generator=gi).to(dev)
                    if solver == "mu":
                        G = mu_step(G, P, Q)
                    elif solver == "hals":
                        hals_blocked(G, P, Q, o["code_steps"])
                    else:
                        G = apg_steps(G, P, Q, o["code_steps"], L)
            codes.put(i, G)
            S_GA += (G.T @ A).double()
            S_GG += (G.T @ G).double()
            if s_AA is None:
                aa += A.pow(2).sum(1).double().sum()  # no float64 copy of the chunk
        if s_AA is None:
            _all_reduce(S_GA, S_GG, aa)
            s_AA = aa
        else:
            _all_reduce(S_GA, S_GG)
        if W is not None:
            Wd = W.double()
            loss = float(s_AA - 2 * (Wd * S_GA).sum() + ((Wd @ Wd.T) * S_GG).sum())
            floor = GAIN_FLOOR * max(float(s_AA), 1e-30)
            lows.append(min(loss, lows[-1]) if lows else loss)
            gain = stop_gain_value(lows, it, floor)
            rec = {"iter": it, "loss": loss, "rel_error": math.sqrt(max(loss, 0) / max(float(s_AA), 1e-30)),
                   "seconds": time.time() - t0, "dead": int(reseed.sum()), "gain": gain}
            records.append(rec)
            if history is not None:
                history.append(rec)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(rel_error=f"{rec['rel_error']:.4f}")
            if loss < best * (1 - o["tol"]):
                best, best_W, best_iter, stale = loss, W.clone(), it, 0
            else:
                stale += 1
            # Every rank holds the same loss (all-reduced statistics), so all stop together.
            if converged(lows, it, o["stop_gain"], floor):
                stopped = "converged"
                break
            if stale >= o["patience"]:
                stopped = "stalled"
                break
            if it == o["max_iter"]:
                break
        # -- dictionary step ---------------------------------------------------------
        norms = S_GG.diagonal().sqrt()
        reseed = norms <= 1e-12 * norms.max().clamp_min(1e-30)
        Wd = _solve_dictionary(S_GG, S_GA, solver, o["ridge"])
        if nonneg:
            Wd = Wd.clamp_min(0)
        Wd = winner_take_all(Wd, keep)
        if solver != "mu" and (keep < d_in or nonneg):
            Wd = _refit_on_support(Wd, S_GG, S_GA, nonneg)
        # Rescale so code columns have unit norm (the official "fix_hoyer_scale").
        c = torch.where(reseed, torch.ones_like(norms), norms)
        Wd = Wd * c[:, None]
        inv_scale = (1 / c).float()
        W = Wd.float()
        W[reseed] = 0
        Q = W @ W.T
        if solver == "apg":  # its step size; the other solvers do not need it
            L = float(torch.linalg.eigvalsh(Q.double())[-1].clamp_min(1e-30))
        stop = requested()  # SIGINT/SIGTERM inside saekit.jobs.graceful: checkpoint, then stop
        if ckpt is not None and (stop or checkpoint_every and (it + 1) % checkpoint_every == 0):
            state = {"W": W, "Q": Q, "inv_scale": inv_scale, "reseed": reseed, "s_AA": s_AA,
                     "generator": g.get_state(), **({"best_W": best_W} if best_W is not None else {})}
            if store != "recompute":
                state |= sc.gather_codes(codes, chunks, rank, world,
                                         torch.bfloat16 if store == "memmap" else torch.float32)
            if rank == 0:
                sc.save(ckpt, {"fit": fit_id, "next_pass": it + 1, "L": L, "best": best, "best_iter": best_iter,
                               "stale": stale, "lows": lows, "gain": gain, "records": records,
                               "seconds": time.time() - t0}, state)
        if stop:
            if bar is not None:
                bar.close()
            where = f"; checkpoint {ckpt}" if ckpt is not None else ""
            raise Interrupted(f"{stop} after pass {it + 1}{where}")
    if bar is not None:
        bar.close()
    W = best_W if best_W is not None else W
    # The reported error is the dictionary's with NNLS-optimal codes on the training
    # tokens, which is what ``encode`` reproduces (the last pass's codes had a few sweeps).
    final = torch.zeros((), dtype=torch.float64, device=dev)
    Q = W @ W.T
    for i, lo, hi in mine:
        A = load(lo, hi)
        G = nnls(A, W, Q=Q, init=codes.get(i), max_iter=o["encode_iter"], tol=o["encode_tol"])
        final += (A - G @ W).pow(2).sum(1).double().sum()
    _all_reduce(final)
    codes.close()
    d = cls(cfg).to(dev)
    with torch.no_grad():
        d.W_dec.copy_(unit_rows(W, eps=1e-30))  # a zero row stays zero
    d.cfg.metadata.update({"n_tokens": n, "iterations": it, "best_iter": best_iter, "stopped": stopped,
                           "gain": gain, "loss": float(final),
                           "rel_error": math.sqrt(max(float(final), 0) / max(float(s_AA), 1e-30)),
                           "last_pass_loss": best,
                           "fit_seconds": round(time.time() - t0, 2), "codes": store, "seed": seed,
                           "codes_disk_bytes": codes.disk_bytes,
                           **provenance()})
    if ckpt is not None and rank == 0:  # finished: the caller saves the dictionary
        remove_directory(ckpt)
    return d.eval()
