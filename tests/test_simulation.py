"""delphi's simulation scorer (saekit.interp.simulation): the 0–10 scale and the
correlation on hand-built arrays with known answers, the answer parser, the offline
simulator on the demo LM's planted-concept features against random descriptions, the
pipeline's ``simulation`` columns (with an LLM simulator on a scripted server), and the
LLM simulator against a real server (SmolLM2-135M-Instruct on loopback)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from llm_server import ScriptedServer
from test_interp import concept_features
from test_interp_llm import honest_model

import saekit
from saekit.interp import describe, score
from saekit.interp.answers import CallLog, NoAnswer
from saekit.interp.llm import LLMClient
from saekit.interp.simulation import (
    activation_list_outcome,
    corpus_simulation,
    correlation,
    description_terms,
    llm_simulation,
    normalize_activations,
    parse_activation_list,
    simulate_offline,
    simulation_score,
)
from saekit.interp.store import collect, token_strings

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- hand-built arrays


@pytest.mark.timeout(30)
def test_normalization_is_delphis_floor_of_ten_times_the_fraction_of_the_maximum():
    np.testing.assert_array_equal(normalize_activations([0.0, 0.5, 1.0, 1.99, 2.0], 2.0), [0, 2, 5, 9, 10])
    np.testing.assert_array_equal(normalize_activations([0.29, 0.3, 3.0], 1.0), [2, 3, 10])  # above max: 10
    np.testing.assert_array_equal(normalize_activations([0.0, 4e-4, 0.5], 0.0), [0, 4, 10])  # max floored at 1e-3
    with pytest.raises(ValueError, match="max_activation"):
        normalize_activations([1.0], float("nan"))


@pytest.mark.timeout(30)
def test_correlation_has_its_known_values():
    assert correlation([0, 0, 10, 0], [0, 0, 5, 5]) == pytest.approx(1 / math.sqrt(3))  # worked by hand
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert correlation(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert correlation([0, 3, 0], [2, 2, 2]) == 0.0  # a constant prediction explains nothing
    assert math.isnan(correlation([0, 0, 0], [0, 5, 0]))  # nothing to predict
    with pytest.raises(ValueError, match="align"):
        correlation([1, 2], [1, 2, 3])


@pytest.mark.timeout(30)
def test_simulation_score_pools_tokens_and_averages_examples():
    true = [[0, 10, 0], [0, 0, 5], [0, 0, 0]]
    pred = [[0, 8, 1], [1, 0, 0], [0, 2, 0]]
    s = simulation_score(true, pred, [True, True, False])
    assert s.correlation == pytest.approx(np.corrcoef(sum(true, []), sum(pred, []))[0, 1])
    assert s.activating_correlation == pytest.approx(np.corrcoef(sum(true[:2], []), sum(pred[:2], []))[0, 1])
    per = [np.corrcoef(t, p)[0, 1] for t, p in zip(true[:2], pred[:2], strict=True)]  # the silent one has none
    assert s.example_mean == pytest.approx(np.mean(per))
    assert (s.n_simulated, s.n_examples, s.n_tokens) == (3, 3, 9)
    left_out = simulation_score(true, [pred[0], None, pred[2]])  # an unreadable answer drops out
    assert (left_out.n_simulated, left_out.n_examples, left_out.n_tokens) == (2, 3, 6)
    assert left_out.correlation == pytest.approx(np.corrcoef(true[0] + true[2], pred[0] + pred[2])[0, 1])
    none = simulation_score(true, [None, None, None])
    assert math.isnan(none.correlation) and none.n_simulated == 0
    with pytest.raises(ValueError, match="example 1: 3 true activations but 2"):
        simulation_score(true, [pred[0], [0, 1], pred[2]])


@pytest.mark.timeout(30)
def test_parser_reads_lists_and_salvages_other_forms():
    assert parse_activation_list("[0, 0, 7, 10]", 4) == [0, 0, 7, 10]
    assert activation_list_outcome("Sure!\n[0, 0, 7, 10]", 4) == "parsed"
    js = json.dumps({"activations": [{"token": "a", "activation": 3}, {"token": "b", "activation": None}]})
    assert parse_activation_list(js, 2) == [3, 0]
    assert activation_list_outcome(js, 2) == "salvaged"
    echo = '1 "The" 0\n2 " cat" 9\n3 "." 0'
    assert parse_activation_list(echo, 3) == [0, 9, 0]
    assert parse_activation_list("0 4 0", 3) == [0, 4, 0]
    assert parse_activation_list("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ", 6) is None  # cut off, too many
    assert parse_activation_list("[0, 12, 0]", 3) is None  # off the scale
    assert parse_activation_list("[0, 1]", 3) is None
    assert activation_list_outcome("I think the cat.", 3) == "unparseable"
    assert activation_list_outcome(NoAnswer("failed"), 3) == "failed"
    assert parse_activation_list("<think>[1, 1, 1]</think>[0, 5, 0]", 3) == [0, 5, 0]


@pytest.mark.timeout(30)
def test_description_terms_follow_the_template_and_drop_stopwords():
    terms = dict(description_terms("tokens: Paris, London | context: flew, , | promotes: ., the"))
    assert terms["Paris"] == terms["London"] == 1.0 and terms["flew"] == 0.25
    assert terms["."] == terms[","] == terms["the"] == 0.25  # a template's items are kept as they are
    free = dict(description_terms("Mentions of days of the week, such as Monday"))
    assert "Monday" in free and "days" in free and "week" in free
    assert not {"of", "the", "such", "as", "Mentions"} & set(free)


# --------------------------------------------------------------------------- the demo LM


@pytest.fixture(scope="module")
def concept_corpus(demo_model):
    """The demo SAE's best feature per planted concept family, described offline from one
    store and scored on held-out demo text (a smaller version of test_interp's)."""
    d = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    vocab = token_strings(demo_model)
    tokens = saekit.load_tokens("demo", demo_model, n_tokens=96 * 128, seed=5)
    best = concept_features(demo_model, d, tokens)
    feats = sorted(set(best.values()))
    store = collect(demo_model, d, tokens, features=feats, top_k=50, n_samples=50)
    desc = describe.describe(store, vocab, feats, model=demo_model, dictionary=d)
    held = saekit.load_tokens("demo:heldout", demo_model, n_tokens=100 * 128, seed=0)
    corpus = score.scoring_corpus(demo_model, d, held, feats, vocab)
    return best, desc, corpus, vocab


@pytest.mark.timeout(120)
def test_offline_simulation_prefers_real_descriptions_to_random_ones(concept_corpus):
    best, desc, corpus, vocab = concept_corpus
    feats = sorted(set(best.values()))
    donors = score.random_partners(feats, seed=0)
    rng = np.random.default_rng(0)
    real, rand, noise = {}, {}, {}
    for f in feats:
        words = [w.strip() for w in rng.choice(vocab, 6, replace=False)]
        r, d, w = corpus_simulation(corpus, f, [desc[f]["text"], desc[donors[f]]["text"], ", ".join(words)])
        real[f], rand[f], noise[f] = r.correlation, d.correlation, w.correlation
        assert r.n_simulated == r.n_examples > 0 and r.n_tokens > 0
    print(f"simulation r on the planted features: real {real}, another feature's {rand}, random words {noise}")
    assert all(real[f] > rand[f] for f in feats), (real, rand)
    assert np.mean(list(real.values())) > 0.3, real
    assert abs(np.mean(list(rand.values()))) < 0.1 and abs(np.mean(list(noise.values()))) < 0.1, (rand, noise)


@pytest.mark.timeout(60)
def test_offline_simulator_fires_where_the_description_names_the_token(concept_corpus):
    *_, corpus, _ = concept_corpus
    ex = {"tokens": ["On", " Monday", " we", " met", " Tuesday"], "acts": [0, 1, 0, 0, 1]}
    [[days]] = simulate_offline(["tokens: Monday, Tuesday"], [[ex]])
    assert days[1] == days[4] == 10 and days[0] == days[2] == days[3] == 0
    [[semantic]] = simulate_offline(["days of the week"], [[ex]])
    assert semantic[1] > 0 and semantic[4] > 0 and semantic[2] == semantic[3] == 0
    [[lexical]] = simulate_offline(["weekday names: Monday"], [[ex]], semantic=False)
    assert lexical.tolist() == [0, 10, 0, 0, 0]
    [[nothing]] = simulate_offline(["zebra, xylophone"], [[ex]], semantic=False)
    assert not nothing.any()
    f = corpus.features[0]
    [s] = corpus_simulation(corpus, f, ["zebra xylophone quasar"], semantic=False)  # names nothing here
    assert s.correlation == 0.0 and s.n_tokens > 0
    [s] = corpus_simulation(corpus, f, ["zebra xylophone quasar"])  # only faint likenesses
    assert abs(s.correlation) < 0.05


# --------------------------------------------------------------------------- the pipeline


def _simulating_model(body: dict) -> str:
    """``honest_model`` for every call, and a simulator that predicts 10 on the tokens the
    description names (and 0 elsewhere) for the simulation prompts."""
    if "predict where a feature" not in body["messages"][0]["content"]:
        return honest_model(body)
    user = body["messages"][-1]["content"]
    words = {w.lower() for w in re.findall(r"\w+", user.split("\n")[0].removeprefix("Description:"))}
    tokens = json.loads(user.split("\n")[1].removeprefix("Tokens: "))
    return json.dumps([10 if t.strip().lower() in words else 0 for t in tokens])


@pytest.mark.timeout(240)
def test_interp_reports_simulation_scores_with_intervals(demo_model, tmp_path):
    from saekit.interp.pipeline import InterpConfig, interp, split_tokens, summary_table

    d = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    tokens = split_tokens(saekit.load_tokens("demo", demo_model, n_tokens=2 * 8192, seed=0), 64)
    cfg = InterpConfig(features="6", prism_features=0, llm_features=3, simulation="llm")
    with ScriptedServer(_simulating_model) as server:
        client = LLMClient(server.url, "scripted", cache_dir=tmp_path / "cache", timeout=30, max_retries=0)
        res = interp(demo_model, d, *tokens, None, cfg, client=client, progress=False)
    offline = res.summary["methods"]["offline"]
    assert offline["simulation_n"] == offline["n"] == 6 and offline["random_simulation_n"] == 6
    assert offline["simulation_se"] > 0 and -1 <= offline["simulation"] <= 1
    paired = offline["simulation_vs_random"]
    assert paired["n"] == 6 and paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert paired["difference"] == pytest.approx(offline["simulation"] - offline["random_simulation"])
    maxact = res.summary["methods"]["maxact"]
    assert maxact["llm_simulation_n"] == 3 and maxact["random_llm_simulation_n"] == 3
    calls = res.summary["llm_calls"]["simulation"]
    # one call per example (activating and silent) of each of the 3 features, for its
    # description and for a random one: at most 2 x 3 x (10 + 10)
    assert calls["parsed"] == calls["total"] and 2 * 3 < calls["total"] <= 2 * 3 * 20
    records = json.loads(res.pages["features.json"])["features"]
    scores = [dd["scores"] for r in records for dd in r["descriptions"] if dd["method"] == "maxact"]
    assert len(scores) == 3 and all(s["llm_simulation_parsed"] == 1.0 for s in scores)
    assert all(-1 <= s["llm_simulation"] <= 1 for s in scores)
    assert all(-1 <= r["simulation"] <= 1 for r in res.rows)
    text = summary_table(res.summary)
    assert "simulation r" in text and "random sim. r" in text and "LLM sim. r" in text and " ± " in text
    assert "simulation gain" in text and "LLM sim. gain" in text
    off = interp(demo_model, d, *tokens, None, InterpConfig(features="3", prism_features=0, llm="off",
                                                            simulation="off"), progress=False)
    assert not any("simulation" in k for r in off.rows for k in r)
    with pytest.raises(ValueError, match="simulation must be"):
        InterpConfig(simulation="yes")


# --------------------------------------------------------------------------- a real LLM server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from real_llm import RealLLMServer

    from saekit import gguf

    model_dir = gguf.resolve_model_dir("smollm2-135m")  # converted once, cached
    with RealLLMServer(model_dir, log=tmp_path_factory.mktemp("serve") / "serve.log") as s:
        yield s


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


@pytest.mark.timeout(120)
def test_dictionary_simulation_gives_one_row_of_headline_numbers(demo_model):
    from saekit.interp.score import dictionary_simulation

    d = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    tokens = saekit.load_tokens("demo:heldout", demo_model, n_tokens=48 * 128, seed=1)
    out = dictionary_simulation(demo_model, d, tokens, n_features=16)
    assert out["n_features"] == len(out["rows"]) == 16
    assert out["simulation"] == pytest.approx(np.mean([r["simulation"] for r in out["rows"]]))
    # The most frequent features fire on punctuation and function words, in some places
    # only, so real descriptions score low here (0.1-0.2), but still above random ones.
    assert out["simulation"] > out["random_simulation"] and abs(out["random_simulation"]) < 0.1, out
    assert out["simulation_se"] > 0 and all(r["description"] for r in out["rows"])
    assert out["difference"] == pytest.approx(out["simulation"] - out["random_simulation"])
    assert out["ci95"][0] <= out["difference"] <= out["ci95"][1]
    with pytest.raises(ValueError, match=">= 2 windows"):
        dictionary_simulation(demo_model, d, tokens[:1])
