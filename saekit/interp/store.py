"""Feature statistics from one streaming pass: the data every describer, scorer and
dashboard reads.

:func:`collect` runs the model over token windows, encodes the hook's activations with a
dictionary and keeps, per feature (firing is :meth:`Dictionary.active`, BOS/padding
masked):

- the firing count, activation sum and maximum, and a histogram of log10(activation);
- the **top-K windows** by the feature's maximum in the window (one entry per window, so
  the examples are de-duplicated), each with the feature's activations over a context of
  ``left + 1 + right`` tokens around the maximum (24 and 7, delphi's 32-token window);
- a **uniform sample** of the activating windows (``n_samples`` per feature, drawn by
  priority sampling: every activating (window, feature) pair gets a seeded uniform key
  and the smallest keys are kept). Sorting the sample by activation and cutting it into
  ten equal parts gives the **decile samples**: delphi sorts *all* activating examples
  and splits them into deciles, which needs every example in memory; a uniform sample's
  deciles estimate the same quantile bands in O(n_samples) memory;
- per (token id, feature): the count, sum and maximum of the activation, kept sparse
  (only pairs that fired), and the count of every token id over the masked tokens.

Memory is dominated by the two example sets, ``2 * n_features * K * context`` fp16
values (1024 features x 100 x 32: 13 MB; pass ``features=`` to keep a subset of a wide
dictionary). The store saves as one safetensors file with the example contexts stored
sparse (only nonzero activations) and a JSON manifest. With ``out=`` set, the state is
saved every ``checkpoint_every`` batches into ``out`` marked incomplete, and a new call
with the same arguments resumes from there: the random keys are seeded per batch, so a
resumed pass gives exactly the store an uninterrupted one gives.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import save
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations.harvest import forward_hooks, model_device
from saekit.data import token_mask
from saekit.fileio import atomic_directory, atomic_write_bytes, atomic_write_text
from saekit.interp.store_format import HIST_BINS, HIST_RANGE, MANIFEST, SCHEMA, TENSORS, read_store
from saekit.models import model_name, model_processing

#: Token-statistics pairs are merged (sorted and reduced) once this many are pending.
_MERGE_EVERY = 1 << 21


class Example(NamedTuple):
    """One activating window of one feature."""

    window: int
    """Row of the store's ``tokens``."""
    start: int
    """Position in the window of the context's first token."""
    tokens: list[int]
    """Token ids of the context."""
    acts: list[float]
    """The feature's activation on each context token (0 where it does not fire)."""
    max: float
    """The feature's maximum over the whole window (the ranking key)."""


class TextExample(NamedTuple):
    """An :class:`Example` with its tokens decoded: what prompts and dashboards show."""

    tokens: list[str]
    """Decoded token strings, with their leading spaces."""
    acts: list[float]
    """The feature's activation on each token."""
    max: float
    """The feature's maximum over the whole window."""


def dictionary_fingerprint(dictionary: Any) -> str:
    """sha256 of the decoder weights: which dictionary a store was collected with."""
    w = dictionary.W_dec.detach().float().cpu().contiguous()
    return hashlib.sha256(w.numpy().tobytes()).hexdigest()


def _tokens_sha256(tokens: Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


class _Examples:
    """Per-feature best-``K`` (window, activation context) sets under a score."""

    def __init__(self, n_features: int, k: int, width: int):
        self.score = torch.full((n_features, k), -math.inf)
        self.val = torch.zeros(n_features, k)
        self.win = torch.full((n_features, k), -1, dtype=torch.int64)
        self.pos = torch.zeros(n_features, k, dtype=torch.int64)
        self.ctx = torch.zeros(n_features, k, width, dtype=torch.float16)

    def merge(self, score: Tensor, val: Tensor, first_window: int, dense: Tensor, left: int) -> None:
        """Merge one batch: ``score, val`` are ``[n_features, batch]``; ``dense`` the
        batch's activations ``[batch, T, n_features]``. The argmax position is found only
        for the windows that enter the set (a max with indices over all of ``dense`` costs
        8x a plain one)."""
        k, width = self.score.shape[1], self.ctx.shape[2]
        top = torch.cat([self.score, score], dim=1).topk(k, dim=1)
        sel, fresh = top.indices, top.indices >= k
        self.score = top.values
        old = sel.clamp(max=k - 1)
        self.val = torch.where(fresh, val.gather(1, (sel - k).clamp(min=0)), self.val.gather(1, old))
        self.pos = self.pos.gather(1, old)
        self.win = torch.where(fresh, first_window + sel - k, self.win.gather(1, old))
        self.ctx = self.ctx.gather(1, old[..., None].expand(-1, -1, width))
        f, s = fresh.nonzero(as_tuple=True)
        if len(f):
            j = sel[f, s] - k
            pos = dense[j, :, f].argmax(dim=1)
            self.pos[f, s] = pos
            start = context_start(pos, dense.shape[1], left, width)
            cols = start[:, None] + torch.arange(width)
            self.ctx[f, s] = dense[j[:, None], cols.clamp(max=dense.shape[1] - 1), f[:, None]].half()
        # Windows that never fired keep score -inf; mark them empty.
        self.win[self.score == -math.inf] = -1


def context_start(pos: Tensor, ctx_len: int, left: int, width: int) -> Tensor:
    """First position of a ``width``-token context with ``pos`` at offset ``left``,
    shifted to stay inside the window."""
    return (pos - left).clamp(min=0).clamp(max=max(ctx_len - width, 0))


class FeatureStore:
    """What :func:`collect` gathered; see the module docstring. Load with
    :meth:`FeatureStore.load`, query with :meth:`examples`, :meth:`deciles`,
    :meth:`token_stats`."""

    def __init__(self, manifest: dict[str, Any], tensors: dict[str, Tensor]):
        self.manifest = manifest
        self.t = tensors
        self._row = {int(f): i for i, f in enumerate(tensors["features"].tolist())}

    # -- basic statistics ----------------------------------------------------------

    @property
    def features(self) -> list[int]:
        """Dictionary indices of the features in the store, in row order."""
        return self.t["features"].tolist()

    @property
    def tokens(self) -> Tensor:
        return self.t["tokens"]

    @property
    def n_tokens(self) -> int:
        """Tokens seen (BOS/padding excluded)."""
        return int(self.manifest["n_tokens"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def row(self, feature: int) -> int:
        if feature not in self._row:
            raise KeyError(f"feature {feature} is not in this store (it holds {len(self._row)} features)")
        return self._row[feature]

    def count(self) -> Tensor:
        """Firing count per stored feature."""
        return self.t["count"]

    def frequency(self) -> Tensor:
        return self.t["count"].double() / max(self.n_tokens, 1)

    def mean(self) -> Tensor:
        """Mean activation over the tokens where each feature fires (0 when it never does)."""
        return self.t["sum"] / self.t["count"].clamp(min=1)

    def max(self) -> Tensor:
        return self.t["max"]

    def windows(self) -> Tensor:
        """Number of windows in which each stored feature fired."""
        return self.t["windows"]

    def histogram(self, feature: int) -> tuple[Tensor, Tensor]:
        """``(edges [HIST_BINS + 1], counts [HIST_BINS])`` of log10(activation)."""
        lo, hi, n = self.manifest["histogram"]
        return torch.linspace(lo, hi, n + 1), self.t["hist"][self.row(feature)]

    # -- examples ----------------------------------------------------------------------

    def _examples(self, prefix: str, feature: int) -> list[Example]:
        r = self.row(feature)
        win, pos, val = self.t[f"{prefix}_win"][r], self.t[f"{prefix}_pos"][r], self.t[f"{prefix}_val"][r]
        ctx = self._context(prefix)[r]
        width, T = ctx.shape[1], self.tokens.shape[1]
        out = []
        for i in range(len(win)):
            w = int(win[i])
            if w < 0:
                continue
            s = int(context_start(pos[i], T, self.manifest["context"][0], width))
            n = min(width, T - s)
            out.append(Example(w, s, self.tokens[w, s:s + n].tolist(), ctx[i, :n].float().tolist(),
                               float(val[i])))
        return out

    def _context(self, prefix: str) -> Tensor:
        key = f"{prefix}_ctx"
        if key not in self.t:  # rebuilt from the sparse form once, on first use
            shape = self.t[f"{prefix}_ctx_shape"].tolist()
            dense = torch.zeros(math.prod(shape), dtype=torch.float16)
            dense[self.t[f"{prefix}_ctx_index"].long()] = self.t[f"{prefix}_ctx_value"]
            self.t[key] = dense.view(shape)
        return self.t[key]

    def examples(self, feature: int, n: int | None = None) -> list[Example]:
        """The top windows of a feature, highest maximum first."""
        return self._examples("top", feature)[:n]

    def samples(self, feature: int) -> list[Example]:
        """The uniform sample of a feature's activating windows, highest maximum first."""
        ex = self._examples("smp", feature)
        return sorted(ex, key=lambda e: -e.max)

    def deciles(self, feature: int, n_bins: int = 10) -> list[list[Example]]:
        """The sample cut into ``n_bins`` equal parts by activation, highest first."""
        ex = self.samples(feature)
        edges = [round(i * len(ex) / n_bins) for i in range(n_bins + 1)]
        return [ex[edges[i]:edges[i + 1]] for i in range(n_bins)]

    def token_stats(self, feature: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(token_ids, count, sum, max)`` of the tokens on which the feature fired."""
        r = self.row(feature)
        # Keys are row * n_vocab + token id, kept sorted: one feature is one contiguous run.
        keys, n_vocab = self.t["tok_key"], len(self.t["token_count"])
        lo, hi = torch.searchsorted(keys, torch.tensor([r * n_vocab, (r + 1) * n_vocab])).tolist()
        return keys[lo:hi] - r * n_vocab, self.t["tok_count"][lo:hi], self.t["tok_sum"][lo:hi], self.t["tok_max"][lo:hi]

    def token_counts(self) -> Tensor:
        """How often every token id occurs among the masked tokens, ``[vocab]``."""
        return self.t["token_count"]

    def text(self, examples: Sequence[Example], vocab: Sequence[str]) -> list[TextExample]:
        """Decode examples with :func:`token_strings`' output."""
        return [TextExample([vocab[i] for i in e.tokens], e.acts, e.max) for e in examples]

    # -- disk ------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``manifest.json`` and ``store.safetensors`` into a directory.

        A directory that holds nothing else (or does not exist yet) is replaced as a
        whole (:func:`saekit.fileio.atomic_directory`): a crash or a full disk leaves the
        previous pair of files, never a new tensors file beside an old manifest. A
        directory holding other files too is written per file (atomic each, the tensors
        first, then the manifest that names them by sha256): a crash between the two
        leaves a pair that :meth:`load` rejects and :func:`collect` starts over from.
        A full disk raises :class:`saekit.fileio.DiskFullError` naming the path.
        """
        path = Path(path)
        out = {k: v for k, v in self.t.items() if not k.endswith("_ctx")}
        for prefix in ("top", "smp"):
            ctx = self._context(prefix)
            flat = ctx.reshape(-1)
            idx = flat.nonzero().squeeze(1)
            idx = idx.to(torch.int32) if len(flat) < 2**31 else idx
            out.update({f"{prefix}_ctx_index": idx, f"{prefix}_ctx_value": flat[idx].contiguous(),
                        f"{prefix}_ctx_shape": torch.tensor(list(ctx.shape))})
        data = save({k: v.contiguous() for k, v in out.items()})
        self.manifest["tensors_sha256"] = hashlib.sha256(data).hexdigest()
        text = json.dumps(self.manifest, indent=2) + "\n"
        if _store_only(path):
            with atomic_directory(path) as tmp:  # fsyncs both files once, then renames
                (tmp / TENSORS).write_bytes(data)
                (tmp / MANIFEST).write_text(text, encoding="utf-8")
        else:
            atomic_write_bytes(path / TENSORS, data)
            atomic_write_text(path / MANIFEST, text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStore:
        """Read a store written by :meth:`save`: the tensors file must match the manifest's
        ``tensors_sha256``, and the manifest's fields their types and the tensors; any
        problem raises a ``ValueError`` naming the file and field (``FileNotFoundError``
        when the files are not there): :func:`saekit.interp.store_format.read_store`."""
        return cls(*read_store(path))


_OWN_TEMPORARY = re.compile(rf"\.({re.escape(MANIFEST)}|{re.escape(TENSORS)})\.tmp-\d+(-[0-9a-f]{{8}})?")


def _store_only(path: Path) -> bool:
    """Whether ``path`` is missing or a directory holding only a store's files (and the
    temporaries of their per-file writes), so that it may be replaced as a whole."""
    if not path.exists():
        return not path.is_symlink()
    if not path.is_dir() or path.is_symlink():
        return False
    return all(p.name in (MANIFEST, TENSORS) or _OWN_TEMPORARY.fullmatch(p.name) for p in path.iterdir())


# --------------------------------------------------------------------------- the pass


def _batch_codes(model: Any, dictionary: Any, hook: str, tokens: Tensor, keep: Tensor,
                 features: Tensor | None) -> Tensor:
    """The dictionary's active codes on every kept token, ``[n_kept, n_features]``."""
    x = forward_hooks(model, [hook], tokens)[hook][keep.to(tokens.device)]
    with torch.no_grad():
        codes = dictionary.encode(x.to(dictionary.W_dec.dtype))
        codes = torch.where(dictionary.active(codes), codes, torch.zeros_like(codes))
    if features is not None:
        codes = codes[:, features.to(codes.device)]
    return codes.float().cpu()


def window_codes(model: Any, dictionary: Any, tokens: Tensor, *, features: Sequence[int] | None = None,
                 batch_size: int = 32, mask: Tensor | None = None, progress: bool = False):
    """Yield ``(first_window, dense)`` per batch: the active codes laid out by position,
    ``dense [batch, ctx_len, n_features]``, zero at masked tokens."""
    hook = dictionary.cfg.hook
    if not hook:
        raise ValueError("the dictionary records no hook (cfg.hook): saekit cannot tell where to read activations")
    mask = token_mask(tokens, model) if mask is None else mask
    feats = None if features is None else torch.as_tensor(list(features), dtype=torch.long)
    dev = model_device(model)
    starts = range(0, len(tokens), batch_size)
    if progress:
        starts = tqdm(starts, desc="feature pass", unit="batch")
    for i in starts:
        batch, keep = tokens[i:i + batch_size], mask[i:i + batch_size]
        codes = _batch_codes(model, dictionary, hook, batch.to(dev), keep, feats)
        dense = torch.zeros(*batch.shape, codes.shape[1])
        dense[keep] = codes
        yield i, dense


def collect(model: Any, dictionary: Any, tokens: Tensor, *, features: Sequence[int] | None = None,
            top_k: int = 100, n_samples: int = 100, context: tuple[int, int] = (24, 7),
            batch_size: int = 32, seed: int = 0, out: str | Path | None = None, resume: bool = True,
            checkpoint_every: int = 50, dataset: str = "", progress: bool = False,
            on_batch: Callable[[int], None] | None = None) -> FeatureStore:
    """One streaming pass over ``tokens [n_windows, ctx_len]``; see the module docstring.

    Parameters
    ----------
    model, dictionary
        The language model (TransformerLens hook API) and any saekit ``Dictionary``; the
        activations are read at ``dictionary.cfg.hook``.
    tokens
        Packed windows (``saekit.load_tokens``); BOS, separators and padding are masked.
    features
        Dictionary indices to keep statistics for; default all.
    top_k, n_samples
        Top windows and uniformly sampled windows kept per feature.
    context
        Tokens kept left and right of each example's maximum (delphi: 24 and 7 of 32).
    out
        Directory to save the store in; with ``resume`` an incomplete store there from
        the same arguments is continued, and a complete one is returned as it is.
    checkpoint_every
        Batches between saves of the incomplete state (only with ``out``).
    dataset
        Free text recorded in the manifest (where the tokens came from).
    on_batch
        Called with the number of windows done after every batch.
    """
    if tokens.ndim != 2 or tokens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"tokens must be an integer tensor [n_windows, ctx_len], got "
                         f"{tuple(tokens.shape)} {tokens.dtype}")
    if top_k < 1 or n_samples < 0:
        raise ValueError(f"top_k must be >= 1 and n_samples >= 0, got {top_k} and {n_samples}")
    d_dict = dictionary.cfg.d_dict
    feats = torch.arange(d_dict) if features is None else torch.as_tensor(list(features), dtype=torch.long)
    if len(feats) == 0 or int(feats.min()) < 0 or int(feats.max()) >= d_dict:
        raise ValueError(f"features must be indices in [0, {d_dict}), got {len(feats)} "
                         f"indices from {feats.min().item() if len(feats) else None}")
    mask = token_mask(tokens, model)
    T = tokens.shape[1]
    width = min(context[0] + 1 + context[1], T)
    n_f = len(feats)
    manifest = {
        "schema": SCHEMA, "complete": False, "next_window": 0, "n_tokens": 0,
        "model": model_name(model), "processing": model_processing(model), "hook": dictionary.cfg.hook,
        "dictionary": {"kind": dictionary.cfg.kind, "d_dict": d_dict, "k": dictionary.cfg.k,
                       "sha256": dictionary_fingerprint(dictionary)},
        "n_windows": len(tokens), "ctx_len": T, "tokens_sha256": _tokens_sha256(tokens),
        "features_sha256": _tokens_sha256(feats),
        "dataset": dataset, "seed": seed, "top_k": top_k, "n_samples": n_samples,
        "context": list(context), "histogram": [*HIST_RANGE, HIST_BINS],
    }
    identity = {k: manifest[k] for k in ("model", "hook", "dictionary", "tokens_sha256", "features_sha256",
                                         "seed", "top_k", "n_samples", "context")}
    top, smp = _Examples(n_f, top_k, width), _Examples(n_f, max(n_samples, 1), width)
    stats = {"count": torch.zeros(n_f, dtype=torch.int64), "sum": torch.zeros(n_f, dtype=torch.float64),
             "max": torch.zeros(n_f), "hist": torch.zeros(n_f, HIST_BINS, dtype=torch.int64),
             "windows": torch.zeros(n_f, dtype=torch.int64)}
    n_vocab = int(tokens.max()) + 1
    tok = {"key": torch.zeros(0, dtype=torch.int64), "count": torch.zeros(0, dtype=torch.int64),
           "sum": torch.zeros(0, dtype=torch.float64), "max": torch.zeros(0)}
    token_count = torch.zeros(n_vocab, dtype=torch.int64)
    start = 0
    old = None
    if out is not None and resume and (Path(out) / MANIFEST).exists():
        try:
            old = FeatureStore.load(out)
        except (ValueError, OSError) as e:  # damaged, or half-replaced by a crash (see save)
            warnings.warn(f"cannot resume from the feature store in {out} ({e}); starting the pass over",
                          stacklevel=2)
    if old is not None:
        same = {k: old.manifest.get(k) for k in identity} == identity
        if same and old.complete:
            return old  # this exact pass is done already
        if same and not old.complete:
            start, manifest["n_tokens"] = old.manifest["next_window"], old.manifest["n_tokens"]
            top, smp = _restore(old, "top", top), _restore(old, "smp", smp)
            stats = {k: old.t[k] for k in stats}
            tok = {k: old.t[f"tok_{k}"] for k in tok}
            token_count = old.t["token_count"].clone()

    pending: list[tuple[Tensor, Tensor]] = []
    n_pending = 0
    lo, hi = HIST_RANGE

    def snapshot(done: int, complete: bool) -> FeatureStore:
        nonlocal tok, pending, n_pending
        tok = _merge_token_stats(tok, pending)
        pending, n_pending = [], 0
        manifest.update(complete=complete, next_window=done)
        t = {"tokens": tokens.to(torch.int32), "features": feats, **stats, "token_count": token_count,
             **{f"tok_{k}": v for k, v in tok.items()}}
        for prefix, ex in (("top", top), ("smp", smp)):
            t.update({f"{prefix}_score": ex.score, f"{prefix}_val": ex.val, f"{prefix}_win": ex.win,
                      f"{prefix}_pos": ex.pos, f"{prefix}_ctx": ex.ctx})
        store = FeatureStore(dict(manifest), t)
        if out is not None:
            store.save(out)
        return store

    batches = 0
    rest = tokens[start:]
    for i, dense in window_codes(model, dictionary, rest, features=feats.tolist(), batch_size=batch_size,
                                 mask=mask[start:], progress=progress):
        first = start + i
        B = dense.shape[0]
        keep = mask[first:first + B]
        flat = dense[keep]                                  # [n_kept, n_f]
        fired = flat > 0
        manifest["n_tokens"] += int(keep.sum())
        stats["count"] += fired.sum(0)
        stats["sum"] += flat.sum(0).double()  # fp32 within a batch, fp64 across batches
        r, f = fired.nonzero(as_tuple=True)
        v = flat[r, f]
        b = ((v.log10() - lo) / (hi - lo) * HIST_BINS).floor().long().clamp(0, HIST_BINS - 1)
        stats["hist"].view(-1).index_add_(0, f * HIST_BINS + b, torch.ones_like(b))
        ids = tokens[first:first + B][keep]
        token_count += torch.bincount(ids, minlength=n_vocab)[:n_vocab]
        pending.append((f * n_vocab + ids[r], v))
        n_pending += len(v)
        if n_pending > _MERGE_EVERY:
            tok = _merge_token_stats(tok, pending)
            pending, n_pending = [], 0
        wmax = dense.amax(dim=1).T.contiguous()             # [n_f, B]
        stats["max"] = torch.maximum(stats["max"], wmax.amax(dim=1))
        live = wmax > 0
        stats["windows"] += live.sum(1)
        top.merge(torch.where(live, wmax, -math.inf), wmax, first, dense, context[0])
        if n_samples:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + first)
            key = torch.rand(wmax.shape, generator=gen)
            smp.merge(torch.where(live, -key, -math.inf), wmax, first, dense, context[0])
        batches += 1
        if out is not None and batches % checkpoint_every == 0 and first + B < len(tokens):
            snapshot(first + B, complete=False)
        if on_batch is not None:
            on_batch(first + B)
    return snapshot(len(tokens), complete=True)


def _restore(store: FeatureStore, prefix: str, ex: _Examples) -> _Examples:
    ex.score, ex.val = store.t[f"{prefix}_score"], store.t[f"{prefix}_val"]
    ex.win, ex.pos = store.t[f"{prefix}_win"], store.t[f"{prefix}_pos"]
    ex.ctx = store._context(prefix).clone()
    return ex


def _merge_token_stats(tok: dict[str, Tensor], pending: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Reduce pending (key, activation) pairs into the running sparse statistics."""
    if not pending:
        return tok
    keys = torch.cat([tok["key"]] + [k for k, _ in pending])
    uniq, inv = torch.unique(keys, return_inverse=True)
    n_old = len(tok["key"])
    vals = torch.cat([v for _, v in pending])
    count = torch.zeros(len(uniq), dtype=torch.int64).index_add_(0, inv[:n_old], tok["count"])
    count.index_add_(0, inv[n_old:], torch.ones(len(vals), dtype=torch.int64))
    total = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv[:n_old], tok["sum"])
    total.index_add_(0, inv[n_old:], vals.double())
    mx = torch.zeros(len(uniq)).scatter_reduce_(0, inv, torch.cat([tok["max"], vals]), "amax")
    return {"key": uniq, "count": count, "sum": total, "max": mx}
