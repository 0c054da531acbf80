"""saekit's LLM path against a real server: ``transformers serve`` with SmolLM2-135M-Instruct
on loopback (tests/real_llm.py). The scripted server (tests/llm_server.py) keeps the fast
unit tests of parsing and retries; this one checks that real answers from a small, slow
model go through the describer and the scorer and come back as usable results."""

from __future__ import annotations

import math
import time

import pytest
from real_llm import RealLLMServer

from saekit import gguf
from saekit.interp.answers import CallLog
from saekit.interp.detection import detection
from saekit.interp.llm import LLMClient
from saekit.interp.prompts import explain_maxact
from saekit.interp.simulation import llm_simulation

WORDS = "The children walked to school on Monday and came home on Tuesday afternoon".split()


def _example(marked: set[str], text: str | None = None) -> dict:
    words = text.split() if text else WORDS
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return {"tokens": tokens, "acts": [3.0 if w in marked else 0.0 for w in words]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = gguf.resolve_model_dir("smollm2-135m")  # converted once, cached
    with RealLLMServer(model_dir, log=tmp_path_factory.mktemp("serve") / "serve.log") as s:
        yield s


@pytest.mark.timeout(240)
def test_one_describer_and_one_scorer_call_against_the_real_server(server, tmp_path):
    client = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache", timeout=90, max_retries=1)
    t0 = time.time()
    days = [_example({"Monday", "Tuesday"}), _example({"Monday"}), _example({"Tuesday"})]
    [explanation] = explain_maxact(client, [days], max_tokens=48)
    described = time.time() - t0
    assert isinstance(explanation, str) and explanation.strip(), explanation
    assert client.stats.answered == 1

    t1 = time.time()
    others = [_example(set(), "The cup stood on the kitchen table"), _example(set(), "Rain fell over the old harbour")]
    shown = [_example({"Monday"}, "We met on Monday at noon"), _example({"Tuesday"}, "The shop opens on Tuesday")]
    [score] = detection(client, [explanation], [shown], [others], per_prompt=4, max_tokens=24)
    scored = time.time() - t1
    assert score["n_total"] == 4 and 0 <= score["n_parsed"] <= 4
    if score["n_parsed"]:  # an unparseable answer drops out, never counts as a pass
        assert 0 <= score["balanced_accuracy"] <= 1
    else:
        assert math.isnan(score["balanced_accuracy"])
    assert client.stats.answered == 2 + score["n_retried"]  # an unreadable list is asked again per example

    again = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache")
    assert explain_maxact(again, [days], max_tokens=48) == [explanation]  # from the cache
    assert again.stats.cache_hits == 1 and again.stats.requests == 0
    print(f"server ready in {server.startup_seconds:.1f} s; describer {described:.1f} s, scorer {scored:.1f} s; "
          f"explanation {explanation!r}; detection parsed {score['n_parsed']}/4 ({score['n_retried']} asked again)")


@pytest.mark.timeout(240)
def test_intruder_scorer_against_the_real_server(server, tmp_path):
    from saekit.interp.intruder import intruder

    client = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache", timeout=90, max_retries=1)
    days = [_example({d}) for d in ("Monday", "Tuesday", "Monday", "Tuesday")]
    others = [_example({"school"}), _example({"children"})]
    [r] = intruder(client, [days], [others], n_examples=4, n_trials=2)
    assert r["n_total"] == 2 and 0 <= r["n_correct"] <= r["n_parsed"] <= 2 and r["chance"] == 0.25
    print(f"intruder on the real server: {r}")


def _outcomes_add_up(log, kind: str, n: int) -> dict:
    from saekit.interp.answers import OUTCOMES

    row = log.as_dict()[kind]
    assert row["total"] == n and sum(row[k] for k in OUTCOMES) == n, row
    return row


@pytest.mark.timeout(240)
def test_prism_cluster_labels_against_the_real_server(server, tmp_path):
    from saekit.interp.answers import CallLog
    from saekit.interp.prompts import label_clusters

    client = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache", timeout=90, max_retries=1)
    log = CallLog()
    t0 = time.time()
    cluster = [_example({"Monday"}), _example({"Tuesday"}), _example({"Monday"}, "We met on Monday at noon")]
    [label] = label_clusters(client, [cluster], max_tokens=16, on_error="skip", log=log)
    row = _outcomes_add_up(log, "prism_labels", 1)
    assert isinstance(label, str) and (label.strip() != "") == (row["unparseable"] + row["failed"] == 0)
    assert "\n" not in label and len(label) < 200
    print(f"PRISM label {label!r} in {time.time() - t0:.1f} s; {row}")


@pytest.mark.timeout(240)
def test_fuzzing_scorer_against_the_real_server(server, tmp_path):
    from saekit.interp.answers import CallLog
    from saekit.interp.detection import fuzzing

    client = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache", timeout=90, max_retries=1)
    log = CallLog()
    t0 = time.time()
    shown = [_example({"Monday"}, "We met on Monday at noon"), _example({"Tuesday"}, "The shop opens on Tuesday")]
    others = [_example(set(), "The cup stood on the kitchen table"), _example(set(), "Rain fell over the old harbour")]
    [score] = fuzzing(client, ["days of the week"], [shown], [others], per_prompt=4, max_tokens=24, log=log)
    assert score["n_total"] == 4 and 0 <= score["n_parsed"] <= 4
    if score["n_parsed"]:
        assert 0 <= score["balanced_accuracy"] <= 1 or math.isnan(score["balanced_accuracy"])
    else:  # nothing readable: no score at all, never a pass
        assert math.isnan(score["balanced_accuracy"])
    row = _outcomes_add_up(log, "fuzzing", 1 + score["n_retried"])
    assert row["parsed"] + row["salvaged"] >= score["n_parsed"] > 0 or score["n_parsed"] == 0
    print(f"fuzzing on the real server in {time.time() - t0:.1f} s: parsed {score['n_parsed']}/4 "
          f"({score['n_retried']} asked again); answers {row}")


@pytest.mark.timeout(240)
def test_steering_judge_against_the_real_server(server, tmp_path):
    from saekit.evals.judge import judge
    from saekit.interp.answers import CallLog

    client = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache", timeout=90, max_retries=1)
    log = CallLog()
    t0 = time.time()
    [s] = judge(client, [("days of the week", "We met on Monday and again on Tuesday.")], max_tokens=64,
                on_error="skip", log=log)
    row = _outcomes_add_up(log, "judge", 2)  # the concept prompt and the fluency prompt
    for rating in (s.concept, s.fluency):
        assert rating is None or 0 <= rating <= 2
    assert row["parsed"] + row["salvaged"] == (s.concept is not None) + (s.fluency is not None)
    assert s.score is None or 0 <= s.score <= 2  # None when either rating is unreadable, never a pass
    print(f"judge on the real server in {time.time() - t0:.1f} s: concept {s.concept}, fluency {s.fluency}; {row}")


@pytest.mark.timeout(240)
def test_llm_simulator_against_the_real_server(server, tmp_path):
    client = LLMClient(server.url, server.model, cache_dir=tmp_path / "cache", timeout=90, max_retries=1)
    log = CallLog()
    on = [{"tokens": ["We", " met", " on", " Monday", " at", " noon"], "acts": [0, 0, 0, 3.0, 0, 0]}]
    off = [{"tokens": ["Rain", " fell", " over", " the", " harbour"], "acts": [0.0] * 5}]
    [s] = llm_simulation(client, ["days of the week"], [on], [off], log=log)
    calls = log.as_dict()["simulation"]
    assert calls["total"] == 2 and calls["failed"] == calls["skipped"] == 0
    assert calls["parsed"] + calls["salvaged"] == s.n_simulated >= 1, (calls, s)
    assert -1 <= s.correlation <= 1, s
    print(f"LLM simulation on the real server (SmolLM2-135M): {s}, answers {calls}; "
          f"server ready in {server.startup_seconds:.1f} s")
