"""The steering evaluator on the demo LM: one reduced run shared by the module (all seven
planted concepts, both shipped dictionaries, both selection rules, DiffMean and random
controls, two target KLs, four prompts), judged by a scripted OpenAI-compatible server
on 127.0.0.1; plus the pieces it is built from."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from test_llm_client import ScriptedServer

import saekit
from saekit.config import load_config
from saekit.data import CONCEPTS, FAMILIES, concept_labels, concept_token_ids
from saekit.evals import directions, judge, steer, steering
from saekit.interp.llm import ENV_BASE_URL, LLMClient

ROOT = Path(__file__).resolve().parent.parent
HOOK = "blocks.2.mlp.hook_post"
TARGETS = [0.1, 0.5]
FAMILY_WORDS = {f: [w for ws in groups.values() for w in ws] for f, groups in CONCEPTS.items()}


def scripted_judge(body):
    """AxBench's judge, scripted: concept 2 when a word of the concept (named first in
    its description) is in the fragment, else 0; fluency always 1, in markdown."""
    prompt = body["messages"][0]["content"]
    fragment = re.search(r"\[Sentence Fragment Start\]\n(.*)\n\[Sentence Fragment End\]", prompt, re.S).group(1)
    concept = re.search(r"\[Concept Start\]\n(\w+)", prompt)
    if concept is None:
        return "Some awkward phrasing.\n**Rating:** [[1]]"
    present = any(f" {w}" in fragment for w in FAMILY_WORDS[concept.group(1)])
    return f"Explanation.\nRating: [[{2 if present else 0}]]"


def small_config(**kw) -> steering.Config:
    settings = dict(n_tokens=4096, prompts=steering.DEMO_PROMPTS[:4], target_kls=TARGETS, n_random=2,
                    n_new_tokens=6, n_samples=1)
    return steering.Config(**{**settings, **kw})


@pytest.fixture(scope="module")
def judged(demo_model, tmp_path_factory):
    """The shared run and what the judge server saw."""
    with ScriptedServer(scripted_judge) as server:
        cfg = small_config(llm_base_url=server.url, llm_model="judge-test", llm_api_key="sk-secret",
                           llm_cache_dir=str(tmp_path_factory.mktemp("llm-cache")), llm_max_concurrency=8)
        result = steering.run(cfg, model=demo_model)
    return result, cfg, server


@pytest.fixture(scope="module")
def result(judged):
    return judged[0]


def mean(rows, key):
    xs = [r[key] for r in rows]
    return sum(xs) / len(xs)


def select(rows, **where):
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


# --------------------------------------------------------------------------- recipes and config


@pytest.mark.parametrize("recipe", ["steering_demo.toml", "steering_gpt2.toml"])
def test_recipes_load_into_config(recipe):
    # machine=False: the GPT-2 recipe names the SNMF that train/gpt2_small_snmf.toml writes first
    cfg = load_config(ROOT / "eval" / recipe, cls=steering.Config, machine=False)
    steering.validate(cfg)
    if recipe == "steering_demo.toml":
        assert cfg == steering.Config()  # the recipe spells out the defaults
    else:  # the SNMF paper's protocol on GPT-2 small
        assert (cfg.model, cfg.hook, cfg.strength_unit, cfg.strength_range) == (
            "gpt2", "blocks.6.mlp.hook_post", "absolute", [1.0, 2000.0])
        assert cfg.target_kls == [0.025, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5] and cfg.signs == [1, -1]
        assert (cfg.prompts, cfg.n_samples, cfg.n_new_tokens, cfg.top_k, cfg.top_p) == (
            ["I think that"], 8, 50, 30, 0.3)


def test_bad_config_names_the_field(demo_model, tmp_path):
    for field, value, expected in [("target_kls", [], "target_kls"), ("signs", [2], "signs"),
                                   ("select_by", ["middle"], "select_by"), ("strength_range", [5, 1], "strength_range"),
                                   ("top_p", 0.0, "top_p"), ("n_new_tokens", 0, "n_new_tokens")]:
        with pytest.raises(ValueError, match=expected):
            steering.run(steering.Config(**{field: value}), model=demo_model)
    with pytest.raises(ValueError, match="dictionaries.*blocks.1.mlp.hook_post"):
        steering.run(steering.Config(hook="blocks.1.mlp.hook_post"), model=demo_model)
    with pytest.raises(ValueError, match="n_new_tokens=200 exceeds"):
        steering.run(steering.Config(n_new_tokens=200), model=demo_model)
    with pytest.raises(ValueError, match="unknown key"):
        load_config(None, ["kl_targets=[0.1]"], cls=steering.Config)


def test_concept_vocabulary(demo_model, demo_tokens):
    vocab = directions.concept_vocabulary(demo_model)
    assert list(vocab) == FAMILIES
    current, following = directions.concept_positions(demo_tokens, vocab)
    assert torch.equal(current, concept_labels(demo_tokens, demo_model))  # the planted labels, exactly
    assert torch.equal(following[:, :-1], current[:, 1:]) and (following[:, -1] == -1).all()
    with pytest.warns(UserWarning, match="skipped.*Supercalifragilistic"):
        custom = directions.concept_vocabulary(demo_model, {"wd": ["Monday", "Supercalifragilistic"]})
    assert custom == {"wd": [concept_token_ids(demo_model)["Monday"]]}
    with pytest.raises(ValueError, match="both"):
        directions.concept_vocabulary(demo_model, {"a": ["red"], "b": ["red"]})


# --------------------------------------------------------------------------- the intervention


def test_steering_a_feature_is_a_splice_edit(demo_model, demo_tokens):
    """Adding α·W_dec[f] at the hook is the DESIGN intervention: splice with the error term
    and codes + α at feature f."""
    sae = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    tokens, f, alpha = demo_tokens[:2, :24], 17, 3.0
    steered = steer.steered_logits(demo_model, HOOK, tokens, alpha * sae.W_dec[f].detach().expand(2, -1))

    def add(codes):
        codes = codes.clone()
        codes[..., f] += alpha
        return codes

    with torch.no_grad(), saekit.splice(demo_model, sae, error_term=True, edit=add):
        spliced = demo_model(tokens)
    with torch.no_grad():
        clean = demo_model(tokens)
    assert torch.allclose(steered, spliced, atol=2e-4)
    assert torch.equal(steered[:, 0], clean[:, 0])  # BOS untouched
    assert (steered[:, 1:] - clean[:, 1:]).abs().max() > 0.1


def test_sampling_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    assert (steer.sample_next(logits, 1.0, 1, 1.0, g) == 1).all()  # top-k 1 is greedy
    assert (steer.sample_next(logits, 1.0, 0, 0.1, g) == 1).all()  # a tiny nucleus is the argmax
    drawn = steer.sample_next(logits, 1.0, 2, 1.0, g)
    assert set(drawn.tolist()) == {1, 3}  # top-k 2 keeps the two best


def test_repetition_rate():
    seqs = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 7, 7, 7, 7, 7], [1, 2, 1, 2, 1, 2]])
    assert steer.repetition_rate(seqs, 2).tolist() == pytest.approx([0.0, 0.8, 0.6])
    assert steer.repetition_rate(seqs[:, :1], 2).tolist() == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- the shared run


def test_table_is_tidy_and_complete(result, tmp_path):
    rows = result.rows
    cols = list(rows[0])
    assert all(list(r) == cols for r in rows) and cols[-1] == "example"
    methods = {r["method"] for r in rows}
    assert methods == {"clean", "random", "demo-topk/output", "demo-topk/input", "demo-snmf/output",
                       "demo-snmf/input", "diffmean/output", "diffmean/input"}
    n_concept_methods = 6
    assert len(rows) == len(FAMILIES) * (1 + len(TARGETS) * (n_concept_methods + 2))
    for r in select(rows, method="clean"):
        assert (r["strength"], r["delta_logprob"], r["kl"]) == (0.0, 0.0, 0.0)
    for r in rows:
        assert 0 <= r["success_greedy"] <= 1 and 0 <= r["success_at_k"] <= 1 and 0 <= r["repetition"] <= 1
        assert 1 < r["perplexity"] < 5000
    out = result.save(tmp_path / "steering")
    for f in ("steering.csv", "steering.json", "steering.png", "report.md", "index.html"):
        assert (out / f).stat().st_size > 0
    assert (out / "steering.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "steering.json").read_text())
    assert len(doc["rows"]) == len(rows) and "llm_api_key" not in doc["config"]
    assert "sk-secret" not in (out / "steering.json").read_text() + (out / "index.html").read_text()


def test_strengths_are_calibrated_to_the_target_kl(result, judged):
    cfg = judged[1]
    steered = [r for r in result.rows if r["method"] != "clean"]
    assert all(r["calibrated"] for r in steered)
    for r in steered:
        assert abs(r["kl"] / r["target_kl"] - 1) <= cfg.kl_rtol
    by_target = {t: [r["strength"] for r in steered if r["target_kl"] == t] for t in TARGETS}
    assert min(by_target[0.5]) > 0 and mean_of(by_target[0.5]) > mean_of(by_target[0.1])
    assert result.summary["calibration_steps"] <= cfg.search_steps


def mean_of(xs):
    return sum(xs) / len(xs)


def test_feature_raises_its_concept_more_than_random_at_matched_kl(result):
    """The known result: a planted concept's feature raises the concept's tokens more than
    a random direction of the same KL, for both dictionaries and both selection rules."""
    rows = result.rows
    for method in ("demo-topk/output", "demo-snmf/output", "demo-topk/input", "demo-snmf/input"):
        for t in TARGETS:
            feature = mean(select(rows, method=method, target_kl=t), "delta_logprob")
            random = mean(select(rows, method="random", target_kl=t), "delta_logprob")
            assert feature > random > -1, (method, t, feature, random)
            if method.endswith("/output"):  # output features: by a wide margin, concept by concept
                assert feature > 3 * random + 0.5, (method, t, feature, random)
                for concept in FAMILIES:
                    f_c = select(rows, method=method, target_kl=t, concept=concept)[0]["delta_logprob"]
                    r_c = mean(select(rows, method="random", target_kl=t, concept=concept), "delta_logprob")
                    assert f_c > r_c, (method, t, concept, f_c, r_c)


def test_output_features_steer_better_than_input_features(result):
    """Arad et al.: features chosen by what they promote steer better than features chosen by
    what they fire on (here: fire before vs on the concept's words)."""
    for source in ("demo-topk", "demo-snmf", "diffmean"):
        for t in TARGETS:
            out = mean(select(result.rows, method=f"{source}/output", target_kl=t), "delta_logprob")
            inp = mean(select(result.rows, method=f"{source}/input", target_kl=t), "delta_logprob")
            assert out > inp + 0.5, (source, t, out, inp)


def test_generation_metrics_follow_the_steering(result):
    rows = result.rows
    strong = select(rows, method="diffmean/output", target_kl=0.5)
    clean = select(rows, method="clean")
    assert mean(strong, "success_at_k") > mean(clean, "success_at_k")  # continuations carry the concept
    assert mean(strong, "concept_tokens_per_gen") > mean(clean, "concept_tokens_per_gen")
    assert mean(strong, "perplexity") > mean(clean, "perplexity")  # the price: less natural text
    # Logit lens: output-selected directions promote their concept's words.
    hits = [r["lens_concept_hits"] for r in select(rows, method="diffmean/output", target_kl=0.1)]
    assert sum(h > 0 for h in hits) >= 5, hits
    assert all(r["lens_tokens"] for r in rows if r["method"] != "clean")


def test_llm_judge_against_the_local_server(judged):
    result, cfg, server = judged
    bodies = [q["body"] for q in server.requests]
    assert bodies and all(q["headers"]["Authorization"] == "Bearer sk-secret" for q in server.requests)
    assert all(b["model"] == "judge-test" and b["temperature"] == 0.0 and b["max_tokens"] == cfg.llm_max_tokens
               for b in bodies)
    texts = [b["messages"][0]["content"] for b in bodies]
    assert len(set(texts)) == len(texts)  # each distinct prompt asked once
    assert any("rate the concept's relevance on a scale from 0 to 2" in t for t in texts)
    assert any("rate the sentence's fluency on a scale from 0 to 2" in t for t in texts)
    assert result.summary["judge_unparsed"] == 0
    agree = 0
    for r in result.rows:
        assert r["judge_fluency"] == 1.0 and r["judge_unparsed"] == 0
        assert r["judge_concept"] in [i / len(cfg.prompts) * 2 for i in range(len(cfg.prompts) + 1)]
        # per sample harmonic mean of (2, 1) = 4/3 and of (0, 1) = 0
        assert r["judge_score"] == pytest.approx(r["judge_concept"] / 2 * 4 / 3)
        agree += r["judge_concept"] / 2 == r["success_at_k"]  # the judge reads the words the tokens are
    assert agree >= 0.9 * len(result.rows)


def test_judge_parsing(monkeypatch):
    answers = iter(["Rating: [[2]]", "I cannot rate this.", "Rating: [[2]]", "**Rating:** [[1]]"])
    with ScriptedServer(lambda body: next(answers)) as server:
        client = LLMClient(server.url, "m", cache_dir=None, max_concurrency=1)  # one at a time: in order
        scores = judge.judge(client, [("colour", "The red light"), ("colour", "The blue sea")])
    assert scores == [judge.JudgeScore(2.0, 2.0), judge.JudgeScore(None, 1.0)]
    assert scores[0].score == 2.0 and scores[1].score is None  # unreadable: left out, not 0
    assert judge.JudgeScore(0.0, 2.0).score == 0.0 and judge.JudgeScore(2.0, 1.0).score == pytest.approx(4 / 3)


def test_without_endpoint_dictionaries_or_samples(demo_model, monkeypatch):
    """No endpoint configured: no judge (NaN columns); no dictionaries: DiffMean and random
    only; no samples: success@k is NaN and the greedy continuation stands in; both signs."""
    monkeypatch.delenv(ENV_BASE_URL, raising=False)
    cfg = small_config(dictionaries=None, concepts={"weekday": ["Monday", "Tuesday", "Friday"],
                                                    "colour": ["red", "blue", "green"]},
                       select_by=["output"], target_kls=[0.25], n_random=1, random_kind="covariance", signs=[1, -1],
                       n_samples=0, n_new_tokens=4, n_tokens=2048, prompts=["The", "Then"])
    result = steering.run(cfg, model=demo_model)
    assert {r["method"] for r in result.rows} == {"clean", "diffmean/output", "random"}
    assert len(result.rows) == 2 * (1 + 2 * 2)
    assert all(math.isnan(r["judge_score"]) and math.isnan(r["success_at_k"]) for r in result.rows)
    assert "judge_requests" not in result.summary
    up = select(result.rows, method="diffmean/output", concept="weekday", sign=1)[0]
    down = select(result.rows, method="diffmean/output", concept="weekday", sign=-1)[0]
    assert up["delta_logprob"] > 0 > down["delta_logprob"]  # -d pushes the concept down
    assert abs(up["kl"] / 0.25 - 1) <= cfg.kl_rtol and abs(down["kl"] / 0.25 - 1) <= cfg.kl_rtol
    assert "diffmean/output - @KL 0.25: delta_logprob" in result.summary


def test_unreachable_target_is_reported_not_hidden(demo_model):
    """A bracket too narrow to reach the target: the closest strength is kept and flagged."""
    prompts = steer.tokenize_prompts(demo_model, ["The", "Then"])
    vocab = directions.concept_vocabulary(demo_model)
    ids = [torch.tensor(v) for v in vocab.values()]
    fw = steer.SteeredForwards(demo_model, HOOK, 64)
    _, _, clean = fw.next_token(prompts, torch.zeros(1, 512), None, ids)
    vectors = directions.unit_rows(torch.randn(2, 512, generator=torch.Generator().manual_seed(0)))
    cal = steer.calibrate(fw, prompts, vectors, [0.1, 0.5], clean[0], ids, (1e-3, 1.0), 10, 0.05)
    assert not cal.calibrated.any() and (cal.kl < 0.1).all()
    assert torch.allclose(cal.strength, torch.ones(2, 2), rtol=1e-2)  # the top of the bracket
    wide = steer.calibrate(fw, prompts, vectors, [0.1, 0.5], clean[0], ids, (1e-3, 1e3), 20, 0.05)
    assert wide.calibrated.all() and (wide.strength[:, 1] > wide.strength[:, 0]).all()
