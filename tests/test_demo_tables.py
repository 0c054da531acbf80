"""Numbers with their n: saekit.report's Stat cells, the demo's interp table built from
them, and how tables print missing values and statistics over too few items."""

from __future__ import annotations

import csv
import json
import math

import pytest

from saekit.demo_report import Stages, interp_rows
from saekit.report import (
    EMPTY,
    MIN_N,
    Result,
    Stat,
    html_table,
    markdown_table,
    stat,
    stat_text,
    text_table,
)
from saekit.report.glossary import explain


def test_stat_is_mean_se_and_n_skipping_missing_values():
    s = stat([0.5, 0.7, None, math.nan, 0.9])
    assert s.n == 3 and s.mean == pytest.approx(0.7)
    assert s.se == pytest.approx(0.2 / math.sqrt(3))  # sample std 0.2, over sqrt(3)
    assert stat([0.4]) == Stat(0.4, None, 1) and stat([]).n == 0
    assert stat_text(Stat(0.5712, 0.0812, 24)) == "0.57 ± 0.08 (n=24)"  # the mean to the SE's digit
    assert stat_text(Stat(0.5712, 0.0141, 24)) == "0.571 ± 0.014 (n=24)"
    assert stat_text(Stat(0.857, 0.1, 2)) == "0.86 ± 0.10 (n=2)†"
    assert stat_text(Stat(0.857, 0.1, 2), mark=False) == "0.86 ± 0.10 (n=2)"
    assert stat_text(Stat(math.nan, None, 0)) == f"{EMPTY} (n=0)"


def test_tables_print_missing_as_a_dash_and_mark_low_n():
    rows = [{"description": "offline", "CoSy AUC": Stat(0.57, 0.08, 24), "random CoSy AUC": None},
            {"description": "prism", "CoSy AUC": Stat(0.86, 0.1, MIN_N - 1), "random CoSy AUC": math.nan}]
    text = text_table(rows)
    assert "None" not in text and "nan" not in text and text.count(EMPTY) == 2
    assert "0.57 ± 0.08 (n=24)" in text and f"(n={MIN_N - 1})†" in text
    assert f"fewer than {MIN_N} items" in text  # the footnote the mark points to
    md = markdown_table(rows)
    assert "- **CoSy AUC**: " in md and "None" not in md
    page = html_table(rows)
    assert f'<td class="lown" title="only {MIN_N - 1} items' in page and "0.57 ± 0.08 (n=24)</td>" in page
    assert f'<th title="{explain("CoSy AUC")[:20]}' in page and '<div class="scroll">' in page


def test_stats_round_trip_through_csv_and_json(tmp_path):
    rows = [{"dictionary": "sae", "CoSy AUC": Stat(0.6, 0.05, 12)}]
    Result("demo", rows, title="t").save(tmp_path)
    with open(tmp_path / "demo.csv") as f:
        assert next(csv.DictReader(f)) == {"dictionary": "sae", "CoSy AUC": "0.6", "CoSy AUC SE": "0.05",
                                           "CoSy AUC n": "12"}
    assert json.loads((tmp_path / "demo.json").read_text())["rows"][0]["CoSy AUC"] == {"mean": 0.6, "se": 0.05,
                                                                                          "n": 12}
    assert Result.load(tmp_path).rows == rows


def _interp_result(features: list[dict]) -> Result:
    return Result("interp", [], pages={"features.json": json.dumps({"meta": {}, "features": features})})


def test_interp_rows_count_descriptions_and_flag_two_labels_of_one_feature():
    """The issue's case: a PRISM row from two labels of one feature, whose random label
    scores higher, must show n=2 and be marked, not read as a result."""
    feats = [{"feature": f, "descriptions": [{"method": "offline", "text": "x",
                                               "scores": {"cosy_auc": 0.5 + f / 100, "random_cosy_auc": 0.5}}]}
             for f in range(6)]
    feats[0]["descriptions"] += [{"method": "prism", "text": "a", "scores": {"cosy_auc": 0.55, "random_cosy_auc": 0.9}},
                                 {"method": "prism", "text": "b", "scores": {"cosy_auc": 0.59, "random_cosy_auc": 0.82}}]
    feats.append({"feature": 99, "descriptions": [{"method": "offline", "text": "dead", "scores": {}}]})
    rows = {r["description"]: r for r in interp_rows("SNMF", _interp_result(feats))}
    assert set(rows) == {"offline", "prism", "prism (best of k)"}
    off = rows["offline"]
    assert off["features"] == 6 and off["CoSy AUC"].n == 6 and off["CoSy AUC"].mean == pytest.approx(0.525)
    assert off["embedding AUROC"] is None  # no such score: an empty cell, not a NaN
    prism = rows["prism"]
    assert prism["features"] == 1 and prism["CoSy AUC"] == stat([0.55, 0.59]) and prism["CoSy AUC"].low_n
    assert rows["prism (best of k)"]["random CoSy AUC"] == Stat(0.9, None, 1)
    text = text_table(list(rows.values()))
    assert "0.570 ± 0.020 (n=2)†" in text and "None" not in text


def test_stages_time_each_stage_and_the_rest():
    said = []
    stages = Stages(say=said.append)
    with stages("a"):
        sum(range(10**5))
    with stages("a"):  # a stage run twice adds up
        pass
    rows = {r["stage"]: r for r in stages.rows()}
    assert list(rows) == ["a", "other (between stages)", "total"]
    assert len(said) == 2 and said[0].startswith("[a: ")
    assert rows["total"]["seconds"] >= rows["a"]["seconds"] and rows["total"]["share"] == "100%"
    assert all(explain(c) for c in rows["a"])  # every column of the times table is explained
