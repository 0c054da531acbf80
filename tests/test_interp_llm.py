"""The LLM path of auto-interp end to end: `saekit interp --llm on` against a real
OpenAI-protocol server on loopback, answered by a scripted "model" that reads each prompt
the way an honest LLM would (it explains by the marked tokens, writes texts about the
described word, detects examples that contain it)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from llm_server import ScriptedServer
from test_interp import concept_features

import saekit
from saekit.cli import main

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["On {w} the children went to {w} school.", "Everyone talked about {w} all day.",
             "The {w} was the best part of the story.", "They saw {w} and {w} again.",
             "In the evening {w} came up once more."]


def _words(description: str) -> list[str]:
    return re.findall(r"'([^']+)'", description) or description.split()[-1:]


def _name(spans: Counter) -> str:
    """'the words 'A', 'B', 'C'': the three most common marked spans."""
    return "the words " + ", ".join(f"'{w}'" for w, _ in spans.most_common(3)) if spans else "nothing"


def honest_model(body: dict) -> str:
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "most active are enclosed" in system or "square brackets" in system:       # PRISM label
        return _name(Counter(s.strip() for s in re.findall(r"\[([^\]]+)\]", user)))
    if "effect on the model's output" in system:                                  # output-centric
        return _name(Counter(t.strip() for t in re.findall(r'"([^"]+)"', user)[:3]))
    if "write texts" in system.lower() or "test inputs" in system:                # CoSy texts
        n = int(re.search(r"exactly (\d+) texts", user).group(1))
        ws = _words(user.split("\n")[0])
        return "\n".join(SENTENCES[i % len(SENTENCES)].replace("{w}", ws[i % len(ws)]) for i in range(n))
    if "<< and >>" in system and "marks look misplaced" in system:                # fuzzing
        ws = _words(user.split("\n")[0])
        ex = re.findall(r"Example \d+: (.*)", user)
        return json.dumps([int(any(s.strip() in ws for s in re.findall(r"<<(.*?)>>", e))) for e in ex])
    if "Description:" in user:                                                     # detection
        ws = _words(user.split("\n")[0])
        ex = re.findall(r"Example \d+: (.*)", user)
        return json.dumps([int(any(re.search(rf"\b{re.escape(w)}\b", e) for w in ws)) for e in ex])
    return "[EXPLANATION]: " + _name(Counter(s.strip() for s in re.findall(r"<<(.*?)>>", user)))  # MaxAct


def test_interp_with_an_llm_endpoint(tmp_path, monkeypatch, capsys, demo_model):
    d = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    # The planted-concept features (and a few more), so explanations have something to name.
    best = concept_features(demo_model, d, saekit.load_tokens("demo", demo_model, n_tokens=8192, seed=0))
    features = ",".join(map(str, sorted(set(best.values()))))
    with ScriptedServer(honest_model) as server:
        monkeypatch.setenv("SAEKIT_LLM_BASE_URL", server.url)
        monkeypatch.setenv("SAEKIT_LLM_MODEL", "scripted")
        monkeypatch.setenv("SAEKIT_LLM_CACHE_DIR", str(tmp_path / "cache"))
        out = tmp_path / "interp"
        argv = ["interp", str(ROOT / "checkpoints" / "demo-topk"), "--model", str(ROOT / "checkpoints" / "demo-lm"),
                "--n-tokens", "8192", "--n-score-tokens", "8192", "--features", features, "--prism-features", "4",
                "--llm", "on", "--llm-features", "8", "--out", str(out)]
        assert main(argv) == 0
        n_requests = len(server.requests)
        n_llm = len(set(best.values()))
        assert n_requests > n_llm * 4
        assert main(argv) == 2  # a finished run is never replaced silently
        assert main(argv + ["--resume"]) == 0  # continued: answered from the content-addressed cache
        assert len(server.requests) == n_requests
    printed = capsys.readouterr().out
    assert "maxact" in printed and f"LLM explanations for {n_llm} features (scripted)" in printed
    records = json.loads((out / "features.json").read_text())["features"]
    with_llm = [r for r in records if any(d["method"] == "maxact" for d in r["descriptions"])]
    assert len(with_llm) == n_llm
    for r in with_llm:
        d = {x["method"]: x for x in r["descriptions"]}
        assert d["maxact"]["text"].startswith("the words '") and d["output"]["text"].startswith("the words '")
        for key in ("detection_balanced_accuracy", "fuzzing_balanced_accuracy", "llm_cosy_auc",
                    "random_detection_balanced_accuracy", "random_llm_cosy_auc", "cosy_auc",
                    "intruder_accuracy", "intruder_chance"):
            assert key in d["maxact"]["scores"], key
    prism_labels = [c["label"] for r in records for c in r["clusters"]]
    assert prism_labels and all(lab.startswith("the words '") for lab in prism_labels)
    summary = json.loads((out / "interp.json").read_text())["summary"]
    m = summary["methods"]["maxact"]
    assert summary["llm"] == "scripted" and m["n"] == n_llm
    # An honest reader of the prompts detects a feature's own explanation far better than
    # another feature's, and the texts written from it make the feature fire more.
    assert m["detection_balanced_accuracy"] > m["random_detection_balanced_accuracy"] + 0.1, m
    assert m["llm_cosy_auc"] > m["random_llm_cosy_auc"], m
    assert m["intruder_chance"] == pytest.approx(0.2)  # intruder accuracy is NaN here: the scripted reader never answers it
    page = (out / "features" / f"{with_llm[0]['feature']:05d}.html").read_text()
    assert "maxact" in page and "detection_balanced_accuracy" in page
