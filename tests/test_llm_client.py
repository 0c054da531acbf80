"""The OpenAI-compatible LLM client against a real local HTTP server (loopback only).

The server, :class:`ScriptedServer`, lives in ``tests/llm_server.py`` so other tests share
it; it is imported here by name, which also keeps ``from test_llm_client import
ScriptedServer`` (``tests/test_eval_steering.py``) working.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from typing import Any

import pytest
from llm_server import ScriptedServer

from saekit.interp.llm import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_CACHE_DIR,
    ENV_MODEL,
    LLMClient,
    LLMError,
    chat_completions_url,
    client_from_config,
    parse_rating,
)


def echo(body: dict[str, Any]) -> str:
    return "echo: " + body["messages"][-1]["content"]


def canonical_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode()).hexdigest()


def test_request_headers_body_and_answer(tmp_path):
    with ScriptedServer(echo) as srv:
        client = LLMClient(srv.url, "judge-model", api_key="sk-test-123", cache_dir=None)
        assert client.chat("Rate this.", max_tokens=64) == "echo: Rate this."
        assert client.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                           temperature=0.5, seed=7) == "echo: hi"
    first, second = srv.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == "Bearer sk-test-123"
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["body"] == {"model": "judge-model", "messages": [{"role": "user", "content": "Rate this."}],
                             "temperature": 0.0, "max_tokens": 64}
    assert second["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert second["body"]["temperature"] == 0.5 and second["body"]["seed"] == 7
    assert "sk-test-123" not in repr(client)


def test_base_url_forms_and_bad_input():
    assert chat_completions_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_completions_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_completions_url("https://api.openai.com/v1") == "https://api.openai.com/v1/chat/completions"
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        LLMClient("127.0.0.1:8000", "m")
    with pytest.raises(ValueError, match="model"):
        LLMClient("http://127.0.0.1:8000", "")
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMClient("http://127.0.0.1:8000", "m", max_concurrency=0)
    client = LLMClient("http://127.0.0.1:8000", "m", cache_dir=None)
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        client.chat([{"role": "user"}])
    with pytest.raises(ValueError, match="empty"):
        client.chat([])


def test_concurrency_is_bounded_across_threads():
    with ScriptedServer(echo, delay=0.15) as srv:
        client = LLMClient(srv.url, "m", max_concurrency=3, cache_dir=None)
        results: dict[int, list[str]] = {}

        def batch(i: int) -> None:
            results[i] = client.chat_many([f"thread {i} prompt {j}" for j in range(6)])

        threads = [threading.Thread(target=batch, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(srv.requests) == 12
    assert srv.max_in_flight == 3  # parallel, and never beyond the bound even from two threads
    for i in range(2):
        assert results[i] == [f"echo: thread {i} prompt {j}" for j in range(6)]  # answers in order


def test_content_addressed_cache(tmp_path):
    cache = tmp_path / "cache"
    with ScriptedServer(echo) as srv:
        client = LLMClient(srv.url, "m", cache_dir=cache)
        answers = client.chat_many(["a", "b", "a"])
        assert answers == ["echo: a", "echo: b", "echo: a"]
        assert len(srv.requests) == 2  # the duplicate is sent once
        body = client.request_body("a")
        key = canonical_sha256(body)
        entry = json.loads((cache / key[:2] / f"{key}.json").read_text())
        assert entry["request"] == body and entry["response"]["choices"][0]["message"]["content"] == "echo: a"

        again = LLMClient(srv.url, "m", cache_dir=cache)  # a new client (a rerun) reads the same files
        assert again.chat_many(["b", "a"]) == ["echo: b", "echo: a"]
        assert len(srv.requests) == 2 and again.stats.cache_hits == 2 and again.stats.requests == 0
        assert again.chat("a", temperature=1.0) == "echo: a"  # other parameters, other key
        assert len(srv.requests) == 3

        (cache / key[:2] / f"{key}.json").write_text("{truncated")  # a damaged entry is asked again
        assert again.chat("a") == "echo: a"
        assert len(srv.requests) == 4
        assert json.loads((cache / key[:2] / f"{key}.json").read_text())["request"] == body
    assert not list(cache.rglob("*.tmp"))  # atomic writes leave no temporary files
    assert all("sk-" not in p.read_text() for p in cache.rglob("*.json"))


def test_retries_on_429_and_5xx_then_succeeds():
    replies = iter([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}),
                    (503, b"upstream overloaded", {}), "Rating: [[2]]"])
    with ScriptedServer(lambda body: next(replies)) as srv:
        client = LLMClient(srv.url, "m", cache_dir=None, backoff=0.01)
        assert client.chat("x") == "Rating: [[2]]"
    assert len(srv.requests) == 3
    assert client.stats.retries == 2 and client.stats.answered == 1


def test_errors_are_clear_and_not_retried_when_final(tmp_path):
    with ScriptedServer(lambda body: (400, {"error": {"message": "model 'nope' not found"}}, {})) as srv:
        client = LLMClient(srv.url, "nope", cache_dir=tmp_path, backoff=0.01)
        with pytest.raises(LLMError, match=r"HTTP 400.*model 'nope' not found") as e:
            client.chat("x")
        assert e.value.status == 400 and len(srv.requests) == 1
    with ScriptedServer(lambda body: (500, {"error": "boom"}, {})) as srv:
        client = LLMClient(srv.url, "m", cache_dir=tmp_path, max_retries=2, backoff=0.01)
        with pytest.raises(LLMError, match=r"HTTP 500 after 3 attempts: boom"):
            client.chat("x")
        assert len(srv.requests) == 3
    with ScriptedServer(lambda body: (200, b"<html>not json</html>", {})) as srv:
        with pytest.raises(LLMError, match="not JSON"):
            LLMClient(srv.url, "m", cache_dir=tmp_path).chat("x")
    with ScriptedServer(lambda body: (200, {"choices": []}, {})) as srv:
        with pytest.raises(LLMError, match=r"choices\[0\]\.message\.content"):
            LLMClient(srv.url, "m", cache_dir=tmp_path).chat("x")
    assert not list(tmp_path.rglob("*.json"))  # nothing unusable was cached

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LLMClient(f"http://127.0.0.1:{port}/v1", "m", cache_dir=None, max_retries=1, backoff=0.01)
    with pytest.raises(LLMError, match=rf"could not get an answer from http://127.0.0.1:{port}.*2 attempts"):
        client.chat("x")


def test_config_from_fields_and_environment(monkeypatch, tmp_path):
    for var in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY, ENV_CACHE_DIR):
        monkeypatch.delenv(var, raising=False)
    assert client_from_config() is None  # no endpoint anywhere: no client, no judge
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match=f"llm_model.*{ENV_MODEL}"):
        client_from_config()
    monkeypatch.setenv(ENV_MODEL, "env-model")
    monkeypatch.setenv(ENV_API_KEY, "sk-env")
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "env-cache"))
    c = client_from_config(max_concurrency=2)
    assert (c.url, c.model, c.api_key, c.cache_dir, c.max_concurrency) == (
        "http://127.0.0.1:9/v1/chat/completions", "env-model", "sk-env", tmp_path / "env-cache", 2)
    c = client_from_config("http://127.0.0.1:8/v1", "field-model", "sk-field", cache_dir="off")
    assert (c.url, c.model, c.api_key, c.cache_dir) == (
        "http://127.0.0.1:8/v1/chat/completions", "field-model", "sk-field", None)
    assert os.environ[ENV_MODEL] == "env-model"


@pytest.mark.parametrize("text, expected", [
    ("The concept is clear.\nRating: [[2]]", 2.0),
    ("rating: [[ 1 ]]", 1.0),
    ("**Rating:** [[0]]", 0.0),
    ("Rating: 2", 2.0),
    ("Rating: 1.5.", 1.5),
    ("I will answer as \"Rating: [[score]]\".\nSo: Rating: [[1]]", 1.0),
    ("first thought Rating: [[0]], on reflection Rating: [[2]]", 2.0),
    ("Final answer [[1]]", 1.0),
    ("Rating: [[7]]", None),
    ("no rating here", None),
    ("", None),
])
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_a_failing_call_costs_one_answer_not_the_run(tmp_path):
    """on_error="skip": a call still failing after its retries answers NoAnswer("failed")
    (an empty string) and counts in stats.failed; a wrong model still raises; so does the
    failure that makes max_consecutive_failures in a row (the server is down)."""
    from saekit.interp.answers import NoAnswer

    def flaky(body):
        text = body["messages"][-1]["content"]
        return (503, {"error": "overloaded"}, {}) if "bad" in text else f"ok: {text}"

    with ScriptedServer(flaky) as srv:
        client = LLMClient(srv.url, "m", cache_dir=tmp_path, max_retries=1, backoff=0.01,
                           max_consecutive_failures=4)
        with pytest.warns(RuntimeWarning, match="1 of 3 LLM calls failed"):
            out = client.chat_many(["a", "bad", "c"], on_error="skip")
        assert out == ["ok: a", "", "ok: c"] and client.stats.failed == 1
        assert isinstance(out[1], NoAnswer) and out[1].reason == "failed" and not isinstance(out[0], NoAnswer)
        with pytest.warns(RuntimeWarning, match="2 of 2"):
            assert client.chat_many(["bad 1", "bad 2"], on_error="skip") == ["", ""]  # 2 or 3 in a row: not yet down
        assert client.chat_many(["d"], on_error="skip") == ["ok: d"]  # an answer resets the count
        with pytest.raises(LLMError, match="failed the last 4 calls in a row") as down:
            client.chat_many(["bad 3", "bad 4", "bad 5", "bad 6"], on_error="skip")
        assert down.value.down
        with pytest.raises(LLMError, match="HTTP 503"):
            client.chat_many(["a", "bad"])  # the default still raises
    with ScriptedServer(lambda body: (404, {"error": {"message": "model 'm' not found"}}, {})) as srv:
        client = LLMClient(srv.url, "m", cache_dir=tmp_path, backoff=0.01)
        with pytest.raises(LLMError, match="not found"):
            client.chat_many(["a", "b"], on_error="skip")
    with pytest.raises(ValueError, match="on_error"):
        client.chat_many(["a"], on_error="ignore")


def test_a_deadline_skips_what_the_cache_cannot_answer(tmp_path):
    """Past the client's deadline nothing is sent: cached answers still come back, the
    rest are NoAnswer("skipped") (stats.skipped), and the batch does not raise."""
    import time

    from saekit.interp.answers import NoAnswer

    with ScriptedServer(lambda body: "yes") as srv:
        client = LLMClient(srv.url, "m", cache_dir=tmp_path)
        assert client.chat_many(["cached"]) == ["yes"]
        assert client.stats.asked == 1 and client.stats.asking_seconds > 0
        client.deadline = time.monotonic() - 1
        out = client.chat_many(["cached", "new 1", "new 2"], on_error="skip")
        assert out == ["yes", "", ""] and all(isinstance(a, NoAnswer) and a.reason == "skipped" for a in out[1:])
        assert client.stats.skipped == 2 and client.stats.failed == 0 and len(srv.requests) == 1
        with pytest.raises(LLMError, match="budget is spent"):
            client.chat("new 3")

    def slow(body):
        time.sleep(3)
        return "late"

    with ScriptedServer(slow) as srv:  # an answer still coming at the deadline is not waited for
        client = LLMClient(srv.url, "m", cache_dir=tmp_path / "slow", timeout=60)
        client.deadline = time.monotonic() + 0.2
        t0 = time.monotonic()
        out = client.chat_many(["slow"], on_error="skip")
        assert out == [""] and out[0].reason == "skipped" and client.stats.skipped == 1
        assert time.monotonic() - t0 < 2.5  # one attempt of at least 1 s, not the 60 s timeout


def test_concurrency_and_timeout_from_the_environment(monkeypatch):
    from saekit.interp.llm import client_from_config

    monkeypatch.setenv("SAEKIT_LLM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("SAEKIT_LLM_MODEL", "m")
    monkeypatch.setenv("SAEKIT_LLM_CONCURRENCY", "1")
    monkeypatch.setenv("SAEKIT_LLM_TIMEOUT", "600")
    c = client_from_config(cache_dir="off")
    assert c.max_concurrency == 1 and c.timeout == 600.0
    assert client_from_config(cache_dir="off", max_concurrency=3).max_concurrency == 3  # a field wins
    monkeypatch.setenv("SAEKIT_LLM_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"\$SAEKIT_LLM_TIMEOUT must be a number"):
        client_from_config(cache_dir="off")
