"""`saekit interp`'s LLM part against a server that misbehaves like a real small, slow one:
off-format answers, error answers, timeouts, a run killed half-way, a time budget. The
server is a real HTTP server on loopback (tests/llm_server.py) whose answers come from a
script, so each misbehaviour is exact and the counts can be checked."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from llm_server import ScriptedServer
from test_interp_llm import honest_model

import saekit
from saekit.interp.budget import SIZES, LLMBudget
from saekit.interp.llm import LLMClient
from saekit.interp.pipeline import InterpConfig, interp, split_tokens, summary_table

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent


def kind(body: dict) -> str:
    """Which call a request is, from its system prompt."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "square brackets" in system:
        return "prism_labels"
    if "effect on the model's output" in system:
        return "output"
    if "test inputs" in system:
        return "cosy_texts"
    if "intruder" in system:
        return "intruder"
    if "marks look misplaced" in system:
        return "fuzzing"
    if "Description:" in user:
        return "detection"
    return "maxact"


@pytest.fixture(scope="module")
def topk():
    return saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")


@pytest.fixture(scope="module")
def tokens(demo_model):
    return split_tokens(saekit.load_tokens("demo", demo_model, n_tokens=2 * 8192, seed=0), 64)


def test_failing_and_unreadable_answers_cost_one_score_each_and_are_counted(demo_model, topk, tokens, tmp_path):
    """Detection answers that no parser reads, fuzzing calls that get 503, intruder calls
    that time out: the run finishes, each costs only its score (NaN, never a pass), and
    the report counts every outcome per call type."""
    def misbehaving(body):
        k = kind(body)
        if k == "prism_labels":  # the label, then chatter: salvaged
            return "Label: " + honest_model(body) + "\nI hope this helps!"
        if k == "output":  # no [EXPLANATION]: tag: salvaged
            return "It makes the model say " + honest_model(body)
        if k == "detection":
            return "I am not sure about these examples."
        if k == "fuzzing":
            return 503, {"error": "overloaded"}, {}
        if k == "intruder":
            time.sleep(1.5)  # past the client's timeout
            return "[RESPONSE]: 1"
        return honest_model(body)

    with ScriptedServer(misbehaving) as server:
        client = LLMClient(server.url, "scripted", cache_dir=tmp_path / "cache", timeout=0.4, max_retries=0,
                           backoff=0.01)
        cfg = InterpConfig(features="5", prism_features=2, llm_features=3, n_tokens=8192, n_score_tokens=8192)
        with pytest.warns(RuntimeWarning, match="LLM calls failed"):
            res = interp(demo_model, topk, *tokens, tmp_path / "out", cfg, client=client, progress=False)
    calls = res.summary["llm_calls"]
    assert calls["describe"]["parsed"] == 3 and calls["describe"]["salvaged"] == 3  # maxact, output
    assert calls["prism_labels"]["salvaged"] >= 2 and calls["prism_labels"]["parsed"] == 0
    assert calls["detection"]["parsed"] == calls["detection"]["salvaged"] == 0
    assert calls["detection"]["unparseable"] > 0  # the list answers, then each example asked alone
    assert calls["fuzzing"]["failed"] == calls["fuzzing"]["total"] > 0
    assert calls["intruder"]["failed"] == calls["intruder"]["total"] > 0
    assert calls["cosy_texts"]["parsed"] == calls["cosy_texts"]["total"] > 0
    for row in calls.values():
        assert row["total"] == sum(row[k] for k in ("parsed", "salvaged", "unparseable", "failed", "skipped"))
    work = res.summary["llm_work"]
    assert work["features_done"] == 3 and work["features_skipped"] == 0 and work["stopped"] is None
    for f in work_features(res):
        s = next(d for d in f["descriptions"] if d["method"] == "maxact")["scores"]
        for key in ("detection_balanced_accuracy", "fuzzing_balanced_accuracy", "intruder_accuracy"):
            assert s[key] is None or math.isnan(s[key]), (key, s)  # never a pass
        assert s["detection_parsed"] == 0 and 0 <= s["llm_cosy_auc"] <= 1
    out = res.save(tmp_path / "saved")
    md = (out / "report.md").read_text()
    assert "## llm_calls" in md and "unparseable" in md
    page = (out / "index.html").read_text()
    assert "LLM answers" in page and "unparseable" in page
    assert json.loads((out / "interp.json").read_text())["summary"]["llm_calls"] == calls
    text = summary_table(res.summary)
    assert "LLM answers" in text and "3 of 3 done" in text


def work_features(res) -> list[dict]:
    records = json.loads(res.pages["features.json"])["features"]
    return [r for r in records if any(d["method"] == "maxact" for d in r["descriptions"])]


@pytest.mark.filterwarnings("ignore:.*LLM calls failed after their retries")
def test_a_server_that_stops_answering_ends_the_llm_work_not_the_run(demo_model, topk, tokens, tmp_path):
    """Ten calls failing in a row (the server is gone): the LLM part stops, the run still
    returns its offline result and says why."""
    served = []

    def dies(body):
        served.append(1)
        return honest_model(body) if len(served) <= 6 else (500, {"error": "gone"}, {})

    with ScriptedServer(dies) as server:
        client = LLMClient(server.url, "scripted", cache_dir=tmp_path / "cache", max_retries=0, backoff=0.01)
        cfg = InterpConfig(features="4", prism_features=0, llm_features=4, n_tokens=8192, n_score_tokens=8192)
        with pytest.warns(RuntimeWarning, match="LLM work stopped after"):
            res = interp(demo_model, topk, *tokens, None, cfg, client=client, progress=False)
    work = res.summary["llm_work"]
    assert "failed the last 10 calls in a row" in work["stopped"]
    assert work["features_done"] + work["features_skipped"] == 4 and work["features_skipped"] >= 3
    assert res.summary["methods"]["offline"]["n"] == 4  # the offline part is whole


def test_budget_sizes_prompts_from_the_timed_units():
    """The pilot runs at the smallest prompts; the planner then picks the largest level at
    which the remaining features fit, scaling the last timed unit by the larger of the
    ratios of examples and of answer lengths (generating is what costs on a CPU)."""
    b = LLMBudget(1000.0, None)
    assert b.level == len(SIZES) - 1 and b.per_unit() is None and b.fits()
    b.parts.append({"level": 2, "describe": 4.0, "score": 6.0, "asked": 5})  # the pilot: no baseline
    assert b.per_unit(2) == 16.0  # its scoring counted twice: later features also score a random description
    # CoSy texts: 10x the answer length, asked up to 3 times rather than once
    assert b.per_unit(0) == pytest.approx(4 * max(40 / 10, 512 / 128) + 12 * max(10 / 4, 200 / 40, 3000 * 3 / 300))
    assert b.per_unit(1) == pytest.approx(4 * max(20 / 10, 256 / 128) + 12 * max(6 / 4, 80 / 40, 600 * 2 / 300))
    b.plan(2)  # 2 x 376 s fit in 1000 s
    assert b.level == 0
    b.plan(3)  # 3 x 376 do not; 3 x 56 do
    assert b.level == 1 and b.sizes == SIZES[1]
    b.plan(100)  # nothing fits: the smallest prompts, and as many features as fit
    assert b.level == len(SIZES) - 1
    b.parts.append({"level": 2, "describe": 1.0, "score": 2.0, "asked": 3, "baseline": True})
    assert b.per_unit() == pytest.approx((16.0 + 3.0) / 2)  # measured at this level, not predicted
    assert LLMBudget(None, None).level == 0 and LLMBudget(None, None).fits()
    assert LLMBudget(None, None).left() == math.inf
    with pytest.raises(ValueError, match="llm_budget_s"):
        LLMBudget(0, None)
    with pytest.raises(ValueError, match="llm_budget_s"):
        InterpConfig(llm_budget_s=-1)


def test_a_time_budget_bounds_the_llm_work_and_counts_what_it_skipped(demo_model, topk, tokens, tmp_path):
    """A slow server (0.25 s an answer) and a 12 s budget for 6 features: the pilot runs
    at the smallest prompts and is timed, the features that do not fit are skipped and
    counted, and the LLM work ends within the budget plus one call."""
    with ScriptedServer(honest_model, delay=0.25) as server:
        client = LLMClient(server.url, "scripted", cache_dir=tmp_path / "cache", max_concurrency=1)
        cfg = InterpConfig(features="6", prism_features=0, llm_features=6, n_tokens=8192, n_score_tokens=8192,
                           llm_budget_s=12.0)
        res = interp(demo_model, topk, *tokens, tmp_path / "out", cfg, client=client, progress=False)
    work = res.summary["llm_work"]
    assert work["budget_s"] == 12.0 and work["timed_features"] >= 1
    assert work["level"] == len(SIZES) - 1  # the pilot showed larger prompts would not fit
    assert 1 <= work["features_done"] < 6 and work["features_skipped"] == 6 - work["features_done"]
    assert work["seconds"] <= 12.0 + 0.25 + 2.0  # the call in flight, and the scoring computation after it
    levels = [next(d for d in r["descriptions"] if d["method"] == "maxact")["scores"]["llm_sizes_level"]
              for r in work_features(res)]
    assert len(levels) == work["features_done"] and set(levels) == {len(SIZES) - 1}
    assert "skipped by the time budget" in summary_table(res.summary)


RUN = """
import sys
from saekit.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_from_the_cache_and_asks_nothing_twice(tmp_path):
    """`saekit interp --llm on` killed (SIGKILL) in the middle of its LLM work, then run
    again with --resume: the rerun sends no request the first run had an answer for, and
    what finished before the kill was already on disk."""
    answered: set[str] = set()
    state = {"proc": None, "n": 0, "killed_after": None}
    lock = threading.Lock()

    def key(body):
        return json.dumps(body, sort_keys=True)

    def script(body):
        with lock:
            state["n"] += 1
            if state["proc"] is not None and state["n"] == 45:
                state["killed_after"] = len(answered)
                os.kill(state["proc"].pid, signal.SIGKILL)
                return 500, {"error": "killed"}, {}
            answered.add(key(body))
        return honest_model(body)

    out = tmp_path / "interp"
    argv = ["interp", str(ROOT / "checkpoints" / "demo-topk"), "--model", str(ROOT / "checkpoints" / "demo-lm"),
            "--n-tokens", "8192", "--n-score-tokens", "8192", "--features", "4", "--prism-features", "2",
            "--llm", "on", "--llm-features", "4", "--out", str(out)]
    with ScriptedServer(script) as server:
        env = dict(os.environ, SAEKIT_LLM_BASE_URL=server.url, SAEKIT_LLM_MODEL="scripted",
                   SAEKIT_LLM_CACHE_DIR=str(tmp_path / "cache"), SAEKIT_LLM_CONCURRENCY="1",
                   OMP_NUM_THREADS="1")
        state["proc"] = subprocess.Popen([sys.executable, "-c", RUN, *argv], env=env, cwd=ROOT,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = state["proc"].communicate(timeout=240)
        assert state["proc"].returncode == -signal.SIGKILL, err.decode()[-2000:]
        first = set(answered)
        assert len(first) == 44
        progress = json.loads((out / "llm_progress.json").read_text())
        assert progress["done"] and progress["calls"]  # the finished features, written as they finished
        assert not (out / "interp.json").exists()

        state["proc"] = None
        before = state["n"]
        sent_again: list[str] = []
        original = server.script

        def watch(body):
            sent_again.append(key(body))
            return original(body)

        server.script = watch
        rerun = subprocess.run([sys.executable, "-c", RUN, *argv, "--resume"], env=env, cwd=ROOT,
                               capture_output=True, timeout=240)
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert state["n"] > before and not set(sent_again) & first  # nothing answered is asked again
    summary = json.loads((out / "interp.json").read_text())["summary"]
    assert summary["llm_work"]["features_done"] == 4


def test_concept_texts_salvaged_from_a_small_models_answer(tmp_path):
    """Asked for 3 texts one per line, a small model writes them run together or adds
    more: with salvage the last attempt takes the first 3 sentences or lines (counted as
    salvaged); without, nothing is made up."""
    from saekit.interp.answers import CallLog
    from saekit.interp.prompts import generate_concept_texts

    answers = {"run together": "Monday came. Then Tuesday came. Wednesday was next. Thursday too.",
               "too many": "One.\nTwo.\nThree.\nFour.", "too few": "Only one text here"}

    def script(body):
        return next(a for k, a in answers.items() if k in body["messages"][-1]["content"])

    with ScriptedServer(script) as server:
        client = LLMClient(server.url, "m", cache_dir=tmp_path)
        log = CallLog()
        got = generate_concept_texts(client, list(answers), n=3, retries=0, salvage=True, on_error="skip", log=log)
        assert got == [["Monday came.", "Then Tuesday came.", "Wednesday was next."], ["One.", "Two.", "Three."],
                       None]
        assert log.as_dict()["cosy_texts"] == {"parsed": 0, "salvaged": 2, "unparseable": 1, "failed": 0,
                                               "skipped": 0, "total": 3}
        assert generate_concept_texts(client, list(answers), n=3, retries=0, on_error="skip") == [None] * 3
