"""The demo's tables that need more than a row per item: where the time went, the
feature descriptions' scores with their n, and the perturbation effects with their n.

Every statistic here is a :class:`~saekit.report.Stat` (mean, standard error, n), so the
report, the page and the terminal print it the one way (``0.57 ± 0.08 (n=24)``) and mark
the ones over fewer than :data:`~saekit.report.MIN_N` items.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from saekit.report import Result, Stat, stat


class Stages:
    """Wall-clock and CPU seconds per stage of a run, printed as each ends and kept for
    the report. On a busy machine wall-clock time grows with the load while CPU time
    (this process's, all its threads) does not: the two together say which it was.

    ``with stages("fit TopK SAE"): ...`` times one stage; :meth:`rows` gives the table.
    """

    def __init__(self, say=print) -> None:
        self.seconds: dict[str, tuple[float, float]] = {}
        self._start = (time.perf_counter(), time.process_time())
        self._say = say

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dt, dc = time.perf_counter() - t, time.process_time() - c
            w0, c0 = self.seconds.get(name, (0.0, 0.0))
            self.seconds[name] = (w0 + dt, c0 + dc)
            self._say(f"[{name}: {dt:.1f}s]")

    @property
    def total(self) -> float:
        """Wall-clock seconds since the timer was made."""
        return time.perf_counter() - self._start[0]

    def rows(self) -> list[dict[str, Any]]:
        """One row per stage (wall-clock and CPU seconds, share of the wall-clock total),
        then the time between stages and the total."""
        total, cpu = self.total, time.process_time() - self._start[1]
        rest = (max(0.0, total - sum(w for w, _ in self.seconds.values())),
                max(0.0, cpu - sum(c for _, c in self.seconds.values())))
        items = [*self.seconds.items(), ("other (between stages)", rest), ("total", (total, cpu))]
        return [{"stage": k, "seconds": round(w, 1), "CPU seconds": round(c, 1),
                 "share": f"{100 * w / total:.0f}%"} for k, (w, c) in items]


#: The interp scores the demo's table shows, by column.
INTERP_SCORES = {"CoSy AUC": "cosy_auc", "random CoSy AUC": "random_cosy_auc",
                 "embedding AUROC": "embedding_auroc", "random embedding AUROC": "random_embedding_auroc"}
#: Scores taken as the best of a feature's PRISM labels (as ``saekit interp``'s summary).
BEST_OF_K = ("cosy_auc", "random_cosy_auc")


def interp_rows(label: str, res: Result) -> list[dict[str, Any]]:
    """Per description kind of one ``saekit interp`` result, each score's mean over the
    descriptions scored, with its standard error and n (a :class:`Stat`); ``features``
    counts the features those descriptions belong to. ``prism`` counts each cluster label
    of a feature; ``prism (best of k)`` the best label per feature, as in the interp
    summary. A score with no value is None."""
    records = json.loads(res.pages["features.json"])["features"]
    scores: dict[str, dict[str, list[float]]] = {}
    features: dict[str, set[int]] = {}

    def add(method: str, f: int, key: str, v: Any) -> None:
        scores.setdefault(method, {}).setdefault(key, []).append(v)
        features.setdefault(method, set()).add(f)

    for rec in records:
        descs = [d for d in rec.get("descriptions") or [] if d.get("scores")]
        for d in descs:
            for key, v in d["scores"].items():
                add(d["method"], rec["feature"], key, v)
        prism = [d["scores"] for d in descs if d["method"] == "prism"]
        for key in BEST_OF_K:
            vals = [s[key] for s in prism if s.get(key) is not None]
            if vals:
                add("prism (best of k)", rec["feature"], key, max(vals))
    rows = []
    for method, by in scores.items():
        cells: dict[str, Stat | None] = {col: stat(by.get(key, ())) for col, key in INTERP_SCORES.items()}
        rows.append({"dictionary": label, "description": method, "features": len(features[method]),
                     **{c: s if s.n else None for c, s in cells.items()}})
    return rows


def effect_rows(sens: Result, steer: Result, directions: dict[str, str], radius: float,
                target_kl: float) -> list[dict[str, Any]]:
    """The demo's perturbation table from a sensitivity and a steering result: per kind of
    direction, the next-token KL at ``radius`` median norms (± SE over windows), for each
    dictionary its reconstruction's KL over a cov-mixture step's (± SE over windows), and
    the concept log-prob gain when steering at ``target_kl`` (± SE over concepts ×
    directions). ``directions`` maps each row's label to ``dictionary name`` for the
    dictionaries, or to ``"family|steering method"`` for the baselines."""
    curve = {(r["family"], r["dictionary"]): r for r in sens.rows
             if r["experiment"] == "curve" and r["r"] == radius}
    path = {r["dictionary"]: r for r in sens.rows
            if r["experiment"] == "pathology" and r["family"] == "cov_mixture"}

    def gain(method: str) -> Stat | None:
        s = stat(r["delta_logprob"] for r in steer.rows if r["method"] == method and r["target_kl"] == target_kl)
        return s if s.n else None

    def kl(row: dict | None, mean: str = "kl_mean", se: str = "kl_mean_se") -> Stat | None:
        return Stat(row[mean], row[se], row["n_windows"]) if row else None

    rows = []
    kl_col, ratio_col = f"KL at {radius:g} median norms", "reconstruction KL / cov-mixture KL"
    gain_col = f"concept log-prob gain at KL {target_kl:g}"
    for label, name in directions.items():
        if "|" in name:
            family, method = name.split("|")
            rows.append({"direction": label, kl_col: kl(curve.get((family, ""))) if family else None,
                         ratio_col: None, gain_col: gain(method) if method else None})
        else:
            rows.append({"direction": label, kl_col: kl(curve.get(("feature_active", name))),
                         ratio_col: kl(path.get(name), "kl_ratio", "kl_ratio_se"),
                         gain_col: gain(f"{name}/output")})
    return rows
