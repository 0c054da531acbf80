"""Auto-interp prompts against a real local chat-completions server (loopback only).

The server's script plays a plausible model: it reads the examples out of each prompt
and answers the way a model that understood the task would (1 for examples holding the
description's keyword, the most frequent marked span as explanation, ...), so the
metrics reflect the prompts' layout end to end.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, NamedTuple

import pytest
from llm_server import ScriptedServer

from saekit.interp.detection import classification_metrics, detection, fuzzing, parse_binary_list
from saekit.interp.llm import LLMClient, LLMError
from saekit.interp.prompts import (
    PROMPT_VERSION,
    explain_maxact,
    explain_output,
    generate_concept_texts,
    highlight_percentile,
    label_clusters,
    mark_example,
    parse_explanation,
    parse_label,
    parse_lines,
)

pytestmark = pytest.mark.timeout(60)


class Ex(NamedTuple):  # the shape of saekit.interp.store.TextExample
    tokens: list[str]
    acts: list[float]
    max: float


FILLER = [" the", " a", " river", " green", " table", " slowly", " seven", " blue", " sang", " over",
          " paper", " quiet", " lamp", " north", " under", " bright"]


def window(i: int, word: str | None, act: float = 5.0, after: float = 0.0) -> Ex:
    """Ten distinct filler words; ``word`` at position 4 firing ``act``, the next token ``after``."""
    tokens = [FILLER[(i + k) % len(FILLER)] for k in range(10)]
    acts = [0.0] * 10
    if word is not None:
        tokens[4], acts[4], acts[5] = word, act, after
    return Ex(tokens, acts, max(acts))


MONDAY = [window(i, " Monday", 4.0 + i, after=(2.5 + i) if i % 2 else 0.5) for i in range(6)]
PARIS = [window(i + 3, " Paris", act=0.0) for i in range(6)]  # never fires for the Monday feature


def keyword(description: str) -> str:
    return re.findall(r"\w+", description)[-1].lower()


def plausible_model(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    examples = re.findall(r"^(?:Example|Text) \d+: (.*)$", user, re.MULTILINE)
    if user.startswith("Description:"):
        key = keyword(user.splitlines()[0])
        if "vague" in user and len(examples) < 5:
            return "Hard to say, it depends."  # unparseable: those examples go missing
        if "<<" in user:  # fuzzing: do the marked spans show the keyword?
            votes = [int(all(key in s.lower() for s in re.findall(r"<<(.*?)>>", e))) for e in examples]
        else:  # detection
            votes = [int(key in e.lower()) for e in examples]
        return f"Let me look.\n{votes}"
    if user.startswith("Promoted tokens:"):
        first = json.loads(re.match(r"Promoted tokens: (\"(?:[^\"\\]|\\.)*\")", user).group(1))
        return f"[EXPLANATION]: makes the model say {first.strip()}"
    if user.startswith("Concept:"):
        n = int(re.search(r"exactly (\d+) texts", user).group(1))
        if "never" in user:
            return "Only one text."
        if "flaky" in user and "Attempt" not in user:
            n -= 1  # one text short: must be asked again
        return "Here are the texts:\n" + "\n".join(f"{k}. A text about {keyword(user.splitlines()[0])}, "
                                                   f"number {k}." for k in range(1, n + 1))
    if user.rstrip().endswith("Label:"):
        spans = Counter(s.strip() for s in re.findall(r"\[(.*?)\]", user))
        return f"Label: {spans.most_common(1)[0][0]} mentions."
    spans = Counter(s for s in re.findall(r"<<(.*?)>>", user))  # MaxAct explainer
    return f"The marks sit on one word.\n[EXPLANATION]: the word {spans.most_common(1)[0][0]}"


@pytest.fixture
def llm(tmp_path):
    with ScriptedServer(plausible_model) as server:
        yield server, LLMClient(base_url=server.url, model="m", cache_dir=tmp_path / "cache")


def user_message(server: ScriptedServer, containing: str) -> str:
    """The one user message holding ``containing`` (batched requests arrive in any order)."""
    found = [m for r in server.requests if containing in (m := r["body"]["messages"][-1]["content"])]
    assert len(found) == 1, f"{len(found)} requests hold {containing!r}"
    return found[0]


def versioned(server: ScriptedServer) -> bool:
    return bool(server.requests) and all(
        r["body"]["messages"][0]["role"] == "system" and PROMPT_VERSION in r["body"]["messages"][0]["content"]
        and r["body"]["temperature"] == 0.0 for r in server.requests)


# --------------------------------------------------------------------------- marking


def test_mark_example_runs_threshold_and_max():
    ex = Ex(["On", " Monday", " morning", " we", " went", "\n", " home"], [0.0, 4.0, 2.0, 0.5, 1.3, 0.0, 3.0], 4.0)
    assert mark_example(ex) == "On <<Monday morning>> we <<went>>\n <<home>>"
    assert mark_example(ex, threshold=0.6) == "On <<Monday>> morning we went\n <<home>>"
    assert mark_example(ex, max_act=20.0) == "On Monday morning we went\n home"  # all below 0.3 * 20
    assert mark_example(ex, max_act=8.0, open="[", close="]") == "On [Monday] morning we went\n [home]"
    as_dict = {"tokens": ex.tokens, "acts": ex.acts}
    assert mark_example(as_dict) == mark_example(ex)
    assert mark_example(Ex([" a", " b"], [0.0, 0.0], 0.0)) == " a b"  # nothing fires: nothing marked
    with pytest.raises(ValueError, match="2 tokens but 1 activations"):
        mark_example({"tokens": [" a", " b"], "acts": [1.0]})
    # PRISM: at or above the text's own 90th percentile, and above 0
    ten = Ex([f" w{k}" for k in range(10)], [0, 0, 0, 0, 0, 0, 0, 1.0, 3.0, 9.0], 9.0)
    assert highlight_percentile(ten) == " w0 w1 w2 w3 w4 w5 w6 w7 w8 [w9]"
    assert highlight_percentile(ten, percentile=70) == " w0 w1 w2 w3 w4 w5 w6 [w7 w8 w9]"


# --------------------------------------------------------------------------- parsers


@pytest.mark.parametrize("text, n, expected", [
    ("[1, 0, 1]", 3, [1, 0, 1]),
    ("1 0 1", 3, [1, 0, 1]),
    ("Example 1: yes\nExample 2: No\nexample 3: YES", 3, [1, 0, 1]),
    ("**Example 1:** 1\n**Example 2:** 0", 2, [1, 0]),
    ('{"example_1": 1, "example_2": 0}', 2, [1, 0]),
    ("1. yes\n2. no\n3) no", 3, [1, 0, 0]),
    ('["yes", "no"]', 2, [1, 0]),
    ("Example 1 has it, the rest do not.\nAnswer: [1,0,0,0]", 4, [1, 0, 0, 0]),
    ("<think>maybe [1, 1]</think>\n[0, 1]", 2, [0, 1]),
    ("Considering every example:\n0, 1, 1", 3, [0, 1, 1]),
    ("[1, 0]", 3, None),
    ("Examples 1 and 3 fire.", 3, None),
    ("I cannot tell.", 2, None),
    ("", 1, None),
    ("No.", 1, [0]),  # SmolLM2-135M's usual one-example answer
    ("No. The description does not fit the given text because it does not mention Monday.", 1, [0]),
    ("**Yes**, it fits.", 1, [1]),
    ("0", 1, [0]),
    ("1. The description is a list of 0s and 1s", 1, None),  # numbering, then prose: no verdict
])
def test_parse_binary_list(text, n, expected):
    assert parse_binary_list(text, n) == expected


def test_parse_lines_explanation_and_label():
    messy = ("Here are the texts:\n\n1. First text.\n2) Second text\n- third\n**4.** fourth\nText 5: fifth\n"
             "\"sixth\"\n3.5 million people came.\n1990 was a year.\n```\n---\n")
    assert parse_lines(messy) == ["First text.", "Second text", "third", "fourth", "fifth", "sixth",
                                  "3.5 million people came.", "1990 was a year."]
    assert parse_lines("<think>1. no</think>a\n\nb") == ["a", "b"]
    assert parse_explanation("Hmm, the marks.\n[EXPLANATION]:  days of\n the week ") == "days of the week"
    assert parse_explanation("[EXPLANATION]: wrong\n**[Explanation]:** \"right\"") == "right"
    assert parse_explanation("  weekday names  ") == "weekday names"
    assert parse_explanation("weekday names\n[EXPLANATION]:") == "weekday names"
    assert parse_label("Label: days of the week.") == "days of the week"
    assert parse_label("Thinking about it.\n\n\"weekday names\"") == "weekday names"
    assert parse_label("Text 2: days of the week") == "days of the week"
    assert parse_label("The texts are stories.\nText 6:") == ""  # SmolLM2 echoing the prompt: no label


def test_classification_metrics_leave_unparsed_out():
    m = classification_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, None])
    assert (m["tp"], m["fn"], m["tn"], m["fp"], m["n_parsed"], m["n_total"]) == (1, 1, 1, 1, 4, 5)
    assert m["balanced_accuracy"] == m["precision"] == m["recall"] == m["f1"] == 0.5
    none = classification_metrics([1, 0], [None, None])
    assert none["n_parsed"] == 0 and math.isnan(none["balanced_accuracy"]) and math.isnan(none["f1"])
    silent = classification_metrics([1, 0], [0, 0])
    assert silent["precision"] == 0.0 and silent["f1"] == 0.0 and silent["balanced_accuracy"] == 0.5


# --------------------------------------------------------------------------- scorers


def test_detection_separates_matching_from_mismatched_descriptions(llm, tmp_path):
    server, _ = llm
    # one request at a time, so the server sees the prompts in the order they were built
    client = LLMClient(base_url=server.url, model="m", cache_dir=tmp_path / "cache", max_concurrency=1)
    descriptions = ["the weekday Monday", "the city Paris", "vague: the weekday Monday"]
    scores = detection(client, descriptions, [MONDAY] * 3, [PARIS] * 3, per_prompt=5, seed=0)
    assert versioned(server)
    # 12 examples per feature in prompts of 5, 5 and 2; the unreadable 2-example answer
    # below is asked again one example at a time (2 more requests)
    assert len(server.requests) == 3 * 3 + 2
    good, bad, vague = scores
    assert good["balanced_accuracy"] == good["f1"] == good["precision"] == good["recall"] == 1.0
    assert good["n_parsed"] == good["n_total"] == 12
    assert bad["balanced_accuracy"] == 0.0 and bad["f1"] == 0.0  # it picks exactly the wrong ones
    # the 2-example prompt got an unreadable answer: missing, not wrong
    assert vague["n_total"] == 12 and vague["n_parsed"] == 10 and vague["balanced_accuracy"] == 1.0
    assert vague["n_retried"] == 2 and good["n_retried"] == bad["n_retried"] == 0

    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests[:3]]
    shown = [e for p in prompts for e in re.findall(r"^Example \d+: (.*)$", p, re.MULTILINE)]
    assert len(shown) == 12 and not any("<<" in e for e in shown)  # detection examples are unmarked
    flags = [" Monday" in e for e in shown]
    assert sum(flags) == 6 and flags != sorted(flags, reverse=True)  # shuffled, not 6 then 6

    n = len(server.requests)
    rerun = LLMClient(base_url=server.url, model="m", cache_dir=tmp_path / "cache")
    assert detection(rerun, descriptions, [MONDAY] * 3, [PARIS] * 3, seed=0)[:2] == scores[:2]
    assert len(server.requests) == n and rerun.stats.requests == 0 and rerun.stats.cache_hits == 11
    detection(rerun, descriptions[:1], [MONDAY], [PARIS], seed=1)  # another shuffle: new requests
    assert len(server.requests) > n


def test_an_unreadable_list_answer_is_asked_again_one_example_at_a_time(tmp_path):
    """A small model echoes a list prompt but answers a single yes/no question."""
    def small_model(body):
        user = body["messages"][-1]["content"]
        examples = re.findall(r"^Example \d+: (.*)$", user, re.MULTILINE)
        if examples:
            return examples[0]  # an echo: no list to read
        text = re.search(r"^Text: (.*)$", user, re.MULTILINE).group(1)
        return "Yes, it does." if "Monday" in text else "No, the text does not match."

    with ScriptedServer(small_model) as server:
        client = LLMClient(base_url=server.url, model="m", cache_dir=tmp_path / "cache")
        [score] = detection(client, ["the weekday Monday"], [MONDAY], [PARIS], per_prompt=5)
    assert score["n_parsed"] == score["n_total"] == 12 and score["n_retried"] == 12
    assert score["balanced_accuracy"] == 1.0 and len(server.requests) == 3 + 12


def test_fuzzing_marks_and_scores(llm):
    server, client = llm
    scores = fuzzing(client, ["the weekday Monday", "the city Paris"], [MONDAY] * 2, [PARIS] * 2, per_prompt=4)
    assert versioned(server)
    good, bad = scores
    assert good["balanced_accuracy"] == good["f1"] == 1.0 and good["n_parsed"] == 12
    assert bad["recall"] == 0.0 and bad["balanced_accuracy"] <= 0.5

    shown = [e for r in server.requests
             for e in re.findall(r"^Example \d+: (.*)$", r["body"]["messages"][-1]["content"], re.MULTILINE)]
    assert len(shown) == 24
    expected = {"".join(ex.tokens): mark_example(ex) for ex in MONDAY}  # marked where >= 0.3 max
    assert sum("<<Monday>>" in e for e in shown) == 6  # the even windows: only Monday reaches 0.3 max
    for text in shown:
        plain = re.sub(r"<<|>>", "", text)
        if "Monday" in text:
            assert text == expected[plain]
        else:  # ceil(mean of 1, 2, 1, 2, 1, 2 marked tokens) = 2 random tokens of a Paris window
            assert plain in {"".join(ex.tokens) for ex in PARIS}
            assert sum(len(s.split()) for s in re.findall(r"<<(.*?)>>", text)) == 2


# --------------------------------------------------------------------------- describers


def test_explain_maxact_marks_examples_and_parses(llm):
    server, client = llm
    paris_fires = [window(i, " Paris", 3.0) for i in range(4)]
    out = explain_maxact(client, [MONDAY, paris_fires])
    assert out == ["the word Monday", "the word Paris"]
    assert versioned(server) and len(server.requests) == 2
    user = user_message(server, "Monday")
    assert user.count("<<Monday") == 6 and re.findall(r"^Example (\d+):", user, re.MULTILINE) == list("123456")
    assert all("[EXPLANATION]:" in r["body"]["messages"][0]["content"] for r in server.requests)
    assert explain_maxact(client, [MONDAY]) == ["the word Monday"] and len(server.requests) == 2  # cached
    with pytest.raises(ValueError, match="feature 1"):
        explain_maxact(client, [MONDAY, []])


def test_label_clusters_one_request_per_cluster(llm):
    server, client = llm
    clusters = [MONDAY[:4], [window(i, " Paris", 2.0) for i in range(25)]]
    assert label_clusters(client, clusters) == ["Monday mentions", "Paris mentions"]
    assert versioned(server) and len(server.requests) == 2
    first, second = user_message(server, "Monday"), user_message(server, "Paris")
    assert "[Monday]" in first and "Text 4:" in first and "Text 5:" not in first
    assert "Text 20:" in second and "Text 21:" not in second  # PRISM's cap of 20 texts per cluster


def test_explain_output_from_logit_lens_tokens(llm):
    server, client = llm
    out = explain_output(client, [[" Monday", " Tuesday"], [{"token": " Paris", "value": 0.4}]],
                         [[" the"], []])
    assert out == ["makes the model say Monday", "makes the model say Paris"]
    assert versioned(server)
    user = user_message(server, "Monday")
    assert '" Monday", " Tuesday"' in user and 'Suppressed tokens: " the"' in user
    assert "Suppressed tokens: (none)" in user_message(server, "Paris")
    with pytest.raises(ValueError, match="2 features"):
        explain_output(client, [[" a"], [" b"]], [[" c"]])


def test_generate_concept_texts_regenerates_on_wrong_count(llm):
    server, client = llm
    texts = generate_concept_texts(client, ["the weekday Monday", "flaky Paris"], n=4)
    assert texts[0] == [f"A text about monday, number {k}." for k in range(1, 5)]
    assert texts[1] == [f"A text about paris, number {k}." for k in range(1, 5)]
    assert versioned(server)
    asked = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert len(asked) == 3 and sum("flaky" in a for a in asked) == 2  # one retry, for the flaky one
    assert "Attempt 2" in asked[2] and "flaky" in asked[2] and not any("Attempt" in a for a in asked[:2])

    with pytest.raises(LLMError, match=r"exactly 4 texts.*3 attempts.*'never'.*1 lines"):
        generate_concept_texts(client, ["never"], n=4, retries=2)
    assert sum("never" in r["body"]["messages"][-1]["content"] for r in server.requests) == 3
    with pytest.raises(ValueError, match="n "):
        generate_concept_texts(client, ["x"], n=0)
