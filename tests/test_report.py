"""The one result type of every analysis: its layout on disk, its NaN policy, its round trip."""

import json
import math

import pytest

from saekit.evals import EvalResult
from saekit.evals.common import EvalResult as CommonEvalResult
from saekit.report import Result, Section

PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 16


def _result(**kw):
    return Result("thing", [{"item": "a", "x": 1.5, "bad": math.nan}, {"item": "b", "x": 2.0, "bad": math.inf}],
                  {"mean_x": 1.75, "curve": [1, 2]}, {"seed": 0}, {"x_curve.png": PNG},
                  tables={"pairs": [{"a": "a", "b": "b", "cos": 0.5}], "empty": []},
                  sections=(Section("Items", "Some prose.", "thing", ("item", "x"), ("x_curve.png",)),
                            Section("Pairs", table="pairs", links=(("more", "sub/index.html"),))), **kw)


def test_save_writes_one_layout_and_load_reads_it_back(tmp_path):
    r = _result()
    assert r.provenance["saekit_version"] and "torch_version" in r.provenance  # filled in
    out = r.save(tmp_path / "r")
    names = {p.name for p in out.iterdir()}
    assert names == {"thing.csv", "pairs.csv", "thing.json", "report.md", "index.html", "x_curve.png"}
    assert (out / "thing.csv").read_text().splitlines()[0] == "item,x,bad"
    doc = json.loads((out / "thing.json").read_text())  # strict JSON: NaN and inf are null
    assert doc["rows"][0]["bad"] is None and doc["rows"][1]["bad"] is None and doc == r.to_dict()
    md = (out / "report.md").read_text()
    assert "## Items" in md and "![x curve](x_curve.png)" in md and "[more](sub/index.html)" in md
    assert "| item | x |" in md  # the section's columns only
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page and 'href="sub/index.html"' in page and "saekit_version" in page
    back = Result.load(out)
    assert back.to_dict() == r.to_dict() and back.figures == r.figures and back.sections == r.sections


def test_round_trip_is_exact_for_json_values(tmp_path):
    r = Result("plain", [{"a": 1, "b": "x", "c": None}], {"n": 1}, {"k": [1, 2]}, data={"curve": [0.5, 1.0]},
               pages={"index.html": "<p>own site</p>", "features/1.html": "<p>one</p>"})
    out = r.save(tmp_path)
    assert (out / "index.html").read_text() == "<p>own site</p>"  # an analysis's own page wins
    assert Result.load(out) == r


def test_default_sections_and_eval_result_is_the_same_type(tmp_path):
    r = EvalResult("sens", [{"family": "x", "kl": 0.1}], {"median_norm": 3.0}, {"hook": "h"}, {})
    assert CommonEvalResult is Result and isinstance(r, Result)
    md = r.markdown()
    assert "## Summary" in md and "median_norm" in md and "## Results" in md
    with pytest.raises(FileNotFoundError, match="one saved result"):
        Result.load(tmp_path)
    with pytest.raises(ValueError, match="named like the result"):
        Result("a", [], tables={"a": []})
