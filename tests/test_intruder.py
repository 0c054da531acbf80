"""delphi's intruder score (saekit.interp.intruder) against the scripted loopback server:
prompts, parsing, and that unreadable answers count as unparsed, never as right."""

from __future__ import annotations

import math
import re

import pytest
from llm_server import ScriptedServer

from saekit.interp.intruder import intruder, parse_intruder
from saekit.interp.llm import LLMClient

pytestmark = pytest.mark.timeout(60)


def _ex(text: str, fire: str | None) -> dict:
    tokens = [w if i == 0 else " " + w for i, w in enumerate(text.split())]
    return {"tokens": tokens, "acts": [2.0 if fire and t.strip() == fire else 0.0 for t in tokens]}


DAYS = [_ex(f"We met on {d} at noon", d) for d in ("Monday", "Tuesday", "Friday", "Sunday", "Monday", "Friday")]
OTHER = [_ex(f"The {w} was on the table", None) for w in ("cup", "book", "lamp")]


def reader(body: dict) -> str:
    """An honest reader: the intruder is the example without a weekday in it."""
    user = body["messages"][-1]["content"]
    examples = re.findall(r"Example (\d+): (.*)", user)
    odd = [i for i, text in examples if not re.search(r"day\b", text)]
    return f"[RESPONSE]: {odd[0]}"


def test_parse_intruder():
    assert parse_intruder("[RESPONSE]: 3", 5) == 3
    assert parse_intruder("I think the intruder is example 4.", 5) == 4
    assert parse_intruder("RESPONSE: Example 2", 5) == 2
    assert parse_intruder("[RESPONSE]: 9", 5) is None
    assert parse_intruder("The first example is the intruder.", 5) == 1
    assert parse_intruder("It is the last one.", 4) == 4
    assert parse_intruder("The first and the second differ.", 5) is None
    assert parse_intruder("1 or 2", 5) is None and parse_intruder("", 5) is None and parse_intruder(None, 5) is None


def test_an_honest_reader_finds_every_intruder_and_marks_do_not_give_it_away(tmp_path):
    with ScriptedServer(reader) as server:
        client = LLMClient(server.url, "scripted", cache_dir=tmp_path)
        [r] = intruder(client, [DAYS], [OTHER], n_examples=4, n_trials=6)
        prompts = [q["body"]["messages"][-1]["content"] for q in server.requests]
    assert r == {"n_correct": 6, "n_parsed": 6, "n_total": 6, "accuracy": 1.0, "chance": 0.25}
    for p in prompts:  # every example, the intruder included, carries marks
        assert all("<<" in text for text in re.findall(r"Example \d+: (.*)", p)), p


def test_unreadable_answers_are_unparsed_not_right(tmp_path):
    with ScriptedServer(lambda body: "They all look similar to me.") as server:
        client = LLMClient(server.url, "scripted", cache_dir=tmp_path)
        [r] = intruder(client, [DAYS], [OTHER], n_examples=4, n_trials=3)
    assert r["n_parsed"] == 0 and r["n_correct"] == 0 and r["n_total"] == 3 and math.isnan(r["accuracy"])


def test_bad_input_names_the_feature():
    with pytest.raises(ValueError, match="feature 0: an intruder trial needs 4"):
        intruder(None, [DAYS[:2]], [OTHER], n_examples=5)
    with pytest.raises(ValueError, match="one entry per feature"):
        intruder(None, [DAYS], [], n_examples=5)
