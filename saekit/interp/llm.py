"""An OpenAI-compatible chat client: bounded concurrency, retries, a content-addressed cache.

LLM work in saekit (auto-interp describers and scorers, the steering evaluator's judge)
goes to any server that speaks OpenAI's chat-completions protocol (vLLM, Ollama,
llama.cpp's server, a hosted API) through :class:`LLMClient`:

- one request is one POST of ``{"model", "messages", "temperature", "max_tokens", ...}``
  to ``{base_url}/chat/completions``, with ``Authorization: Bearer KEY`` when a key is set;
- a batch (:meth:`LLMClient.chat_many`) runs on at most ``max_concurrency`` threads, and
  a semaphore holds requests from any thread to that bound; identical requests in a
  batch are sent once;
- HTTP 408, 429 and 5xx answers, timeouts and dropped connections are retried with
  exponential backoff and jitter (a numeric ``Retry-After`` header wins); any other error
  raises :class:`LLMError` at once, with the server's own message;
- every answer is cached on disk under the sha256 of the canonical request JSON
  (``{cache_dir}/{key[:2]}/{key}.json``, written atomically), so a rerun costs nothing.
  An entry that cannot be read back whole (truncated, damaged, not this request's, no
  answer text) is a miss: the request is sent again and the entry rewritten. A process
  killed while writing leaves a ``.KEY.PID-XXXX.tmp`` file; the client removes the ones
  of dead writers (and any older than an hour) the first time it writes into that
  folder. When the disk is full the answer is still returned, with a warning that it
  was not cached.
  The key covers the model name, the messages and every sampling parameter, not the
  server URL or the API key: the same model name on two servers shares entries (give
  each server its own ``cache_dir`` when that matters). Sampled answers (temperature > 0)
  are cached too, which makes reruns reproducible.

Configuration: the constructor, or :func:`client_from_config`, where config fields win
over the environment variables ``SAEKIT_LLM_BASE_URL``, ``SAEKIT_LLM_MODEL``,
``SAEKIT_LLM_API_KEY`` and ``SAEKIT_LLM_CACHE_DIR``. Only the standard library is used
(``urllib`` and threads), so the client adds no dependency. Requests to a loopback host
bypass proxy settings (a local server is never behind the proxy); others follow the
usual ``*_proxy`` environment variables.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from saekit.fileio import atomic_write_bytes, disk_full_error, remove_stale_files
from saekit.interp.answers import NoAnswer, parse_rating
from saekit.interp.llm_protocol import (
    Messages,
    chat_completions_url,
    check_messages,
    error_message,
    is_loopback,
    retry_after,
)

__all__ = ["LLMClient", "LLMError", "LLMStats", "NoAnswer", "answer_text", "chat_completions_url",
           "client_from_config", "parse_rating"]

ENV_BASE_URL = "SAEKIT_LLM_BASE_URL"
ENV_MODEL = "SAEKIT_LLM_MODEL"
ENV_API_KEY = "SAEKIT_LLM_API_KEY"
ENV_CACHE_DIR = "SAEKIT_LLM_CACHE_DIR"
ENV_CONCURRENCY = "SAEKIT_LLM_CONCURRENCY"
ENV_TIMEOUT = "SAEKIT_LLM_TIMEOUT"
#: Where answers are cached unless ``cache_dir`` or ``SAEKIT_LLM_CACHE_DIR`` says otherwise.
DEFAULT_CACHE_DIR = Path("~/.cache/saekit/llm")
#: ``cache_dir`` value (config or environment) that turns the cache off.
CACHE_OFF = "off"
#: A temporary cache file older than this (seconds) is stale whoever wrote it.
STALE_TMP_SECONDS = 3600.0
_TMP_NAME = re.compile(r"\.[0-9a-f]{16}\.(?:(\d+)-)?[A-Za-z0-9_]+\.tmp")



class LLMError(RuntimeError):
    """A request that failed for good: an error answer, or a server out of reach after
    every retry. ``status`` is the HTTP status when the server answered; ``timed_out``
    says the last attempt waited ``timeout`` seconds in vain (a slow server, not a
    missing one); ``skipped`` that it was never sent (the time budget was spent);
    ``down`` that the server failed ``max_consecutive_failures`` calls in a row."""

    def __init__(self, message: str, status: int | None = None, timed_out: bool = False,
                 skipped: bool = False, down: bool = False):
        super().__init__(message)
        self.status, self.timed_out, self.skipped, self.down = status, timed_out, skipped, down


#: HTTP statuses that mean the configuration is wrong (key, URL, model): every call
#: would fail alike, so even ``on_error="skip"`` raises at once.
CONFIG_ERRORS = (401, 403, 404)


@dataclass
class LLMStats:
    """Counters of one client (thread-safe through the client's lock)."""

    requests: int = 0
    """HTTP requests sent, retries included."""
    answered: int = 0
    """Requests that came back with a usable answer."""
    retries: int = 0
    """Requests sent again after a 408/429/5xx answer, a timeout or a dropped connection."""
    cache_hits: int = 0
    """Answers read from the cache (no request sent)."""
    failed: int = 0
    """Calls given up after every retry and skipped (``chat_many(on_error="skip")``)."""
    skipped: int = 0
    """Calls not sent because the client's ``deadline`` had passed."""
    asked: int = 0
    """Calls that went to the server (not from the cache), answered or failed."""
    asking_seconds: float = 0.0
    """Wall seconds of the batches that sent something: ``asking_seconds / asked`` is the
    time a call costs this run, concurrency included."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


def answer_text(response: Any, where: str = "LLM answer") -> str:
    """``choices[0].message.content`` of a chat-completions answer, or LLMError."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise LLMError(f"{where} has no choices[0].message.content string: "
                       f"{json.dumps(response)[:300]}")
    return content


class LLMClient:
    """Chat completions from an OpenAI-compatible server.

    Parameters
    ----------
    base_url
        The server, e.g. ``http://127.0.0.1:8000/v1`` (vLLM), ``http://127.0.0.1:11434/v1``
        (Ollama), ``https://api.openai.com/v1``; see :func:`chat_completions_url`.
    model
        The model name the server expects in each request.
    api_key
        Sent as ``Authorization: Bearer KEY``; never written to the cache or to errors.
    max_concurrency
        Requests in flight at once, across all threads using this client.
    cache_dir
        Folder of the content-addressed answer cache; ``None`` turns caching off.
    timeout
        Seconds to wait for one answer before the attempt counts as failed (and is retried).
    max_retries
        Retries after the first attempt, for 408/429/5xx answers, timeouts and dropped
        connections.
    max_consecutive_failures
        With ``chat_many(on_error="skip")``, this many calls failing in a row (no answer
        between them, across batches) means the server is down or swamped, not that one
        call was unlucky: the next failure raises :class:`LLMError` with ``down`` set.
    backoff, max_backoff
        The first retry waits ``backoff`` seconds, each later one twice as long (plus up
        to 25% jitter), never more than ``max_backoff``; a numeric ``Retry-After`` header
        replaces the computed wait (still capped).

    Attributes
    ----------
    deadline
        ``time.monotonic()`` value after which a request that the cache cannot answer is
        not sent, and no attempt waits past it (``chat_many(on_error="skip")`` answers
        such a call ``NoAnswer("skipped")``; a lone :meth:`complete` raises
        :class:`LLMError`); ``None`` (the default): no limit.
        :class:`saekit.interp.budget.LLMBudget` sets it.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, max_concurrency: int = 4,
                 cache_dir: str | Path | None = DEFAULT_CACHE_DIR, timeout: float = 120.0,
                 max_retries: int = 4, backoff: float = 1.0, max_backoff: float = 30.0,
                 max_consecutive_failures: int = 10):
        self.url = chat_completions_url(base_url)
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"LLM model must be a non-empty string (the name the server serves), got {model!r}")
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive (seconds), got {timeout!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        self.base_url, self.model, self.api_key = str(base_url), model, api_key or None
        self.max_concurrency, self.timeout, self.max_retries = max_concurrency, float(timeout), max_retries
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        if not isinstance(max_consecutive_failures, int) or max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures must be a positive integer, got {max_consecutive_failures!r}")
        self.max_consecutive_failures = max_consecutive_failures
        self._failures_in_a_row = 0
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.stats = LLMStats()
        self.deadline: float | None = None
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._swept: set[str] = set()  # cache folders already cleared of stale temporaries
        self._sweep_lock = threading.Lock()
        self._jitter = random.Random()
        host = urllib.parse.urlsplit(self.url).hostname
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        key = ", api_key=***" if self.api_key else ""
        return (f"LLMClient(url={self.url!r}, model={self.model!r}{key}, "
                f"max_concurrency={self.max_concurrency}, cache_dir={self.cache_dir})")

    # -- requests ----------------------------------------------------------------------

    def request_body(self, messages: Messages, temperature: float = 0.0, max_tokens: int = 512,
                     **params: Any) -> dict[str, Any]:
        """The JSON body of one chat-completions request (extra OpenAI parameters such as
        ``seed``, ``top_p`` or ``stop`` go in ``params``)."""
        body = {"model": self.model, "messages": check_messages(messages),
                "temperature": float(temperature), "max_tokens": int(max_tokens), **params}
        try:
            json.dumps(body)
        except (TypeError, ValueError) as e:
            raise ValueError(f"request parameters must be JSON-serialisable: {e}") from e
        return body

    @staticmethod
    def cache_key(body: dict[str, Any]) -> str:
        """sha256 of the canonical request JSON (sorted keys, no whitespace)."""
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    def chat(self, messages: Messages, *, temperature: float = 0.0, max_tokens: int = 512,
             **params: Any) -> str:
        """The answer text to one conversation (a prompt string is one user message)."""
        return answer_text(self.complete(self.request_body(messages, temperature, max_tokens, **params)))

    def chat_many(self, batch: Sequence[Messages], *, temperature: float = 0.0, max_tokens: int = 512,
                  progress: bool = False, on_error: str = "raise", **params: Any) -> list[str]:
        """Answer texts to many conversations, in order, with at most ``max_concurrency``
        requests in flight; identical requests are sent once.

        ``on_error="skip"``: a call that still fails after its retries (a timeout, a
        dropped connection, an error answer) answers ``NoAnswer("failed")``, and one not
        sent because the ``deadline`` passed answers ``NoAnswer("skipped")``: both are
        ``""`` (which no parser reads, so each costs that one answer) and count in
        ``stats.failed`` or ``stats.skipped``, instead of ending the run. A configuration
        error (HTTP 401, 403, 404: key, URL or model) still raises, and so does the
        failure that makes ``max_consecutive_failures`` in a row (``LLMError.down``)."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        bodies = [self.request_body(m, temperature, max_tokens, **params) for m in batch]
        keys = [self.cache_key(b) for b in bodies]
        unique = dict(zip(keys, bodies, strict=True))
        if not unique:
            return []
        bar = None
        if progress:
            bar = tqdm(total=len(unique), desc="LLM", unit="request")

        errors: list[LLMError] = []
        def one(key: str) -> tuple[str, str]:
            try:
                text = answer_text(self.complete(unique[key], key=key))
            except LLMError as e:
                if on_error == "raise" or e.status in CONFIG_ERRORS:
                    raise
                if e.skipped:
                    self.stats.add("skipped")
                    text = NoAnswer("skipped")
                else:
                    self._failed(e)
                    errors.append(e)
                    text = NoAnswer("failed")
            if bar is not None:
                bar.update(1)
            return key, text

        t0, asked = time.monotonic(), self.stats.asked
        try:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(unique))) as pool:
                answers = dict(pool.map(one, unique))
        finally:
            if bar is not None:
                bar.close()
            if self.stats.asked > asked:
                self.stats.add("asking_seconds", time.monotonic() - t0)
        if errors:
            warnings.warn(f"{len(errors)} of {len(unique)} LLM calls failed after their retries and were "
                          f"skipped (first: {errors[0]})", RuntimeWarning, stacklevel=2)
        return [answers[k] for k in keys]

    def _failed(self, e: LLMError) -> None:
        """Count a failed call; raise once too many failed in a row (see ``max_consecutive_failures``)."""
        self.stats.add("failed")
        with self.stats.lock:
            self._failures_in_a_row += 1
            down = self._failures_in_a_row >= self.max_consecutive_failures
        if down:
            raise LLMError(f"{self.url} failed the last {self._failures_in_a_row} calls in a row (last: {e}); "
                           "the server looks down or overloaded. Raise the timeout ($SAEKIT_LLM_TIMEOUT) or "
                           "lower the concurrency ($SAEKIT_LLM_CONCURRENCY) if it is only slow",
                           status=e.status, timed_out=e.timed_out, down=True) from e

    def complete(self, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        """The raw answer JSON to a request body, from the cache or the server (not sent,
        :class:`LLMError` with ``skipped``, once the ``deadline`` has passed)."""
        key = key or self.cache_key(body)
        cached = self._cache_read(key, body)
        if cached is not None:
            self.stats.add("cache_hits")
            return cached
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise LLMError("the LLM time budget is spent; request not sent", skipped=True)
        self.stats.add("asked")
        response = self._send(body)
        answer_text(response, where=f"answer from {self.url}")  # never cache an unusable answer
        with self.stats.lock:
            self._failures_in_a_row = 0
        try:
            self._cache_write(key, body, response)
        except OSError as e:
            err = disk_full_error(e, self._cache_path(key))
            if err is None:
                raise
            warnings.warn(f"{err}; the answer is used but not cached", RuntimeWarning, stacklevel=2)
        return response

    def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            wait: float | None = None
            # With a deadline, no attempt outlives it: the budget bounds the run's wall
            # time, and one slow answer on a CPU server can take the whole timeout.
            timeout = self.timeout
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise LLMError("the LLM time budget ran out before this request was answered", skipped=True)
                timeout = min(timeout, max(left, 1.0))
            try:
                with self._slots:  # released before any backoff sleep
                    self.stats.add("requests")
                    with self._opener.open(request, timeout=timeout) as r:
                        raw = r.read()
            except urllib.error.HTTPError as e:
                message = error_message(e.read() or b"")
                if (e.code in (408, 429) or e.code >= 500) and not last:
                    wait = retry_after(e.headers)
                else:
                    tried = f" after {attempt + 1} attempts" if attempt else ""
                    raise LLMError(f"{self.url} answered HTTP {e.code}{tried}: {message}"
                                   + _hint(e.code, self.model), status=e.code) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise LLMError("the LLM time budget ran out while waiting for this answer",
                                   skipped=True) from None
                if last:
                    reason = getattr(e, "reason", None) or e
                    timed_out = isinstance(e, TimeoutError) or isinstance(reason, TimeoutError)
                    raise LLMError(f"could not get an answer from {self.url} after {attempt + 1} attempts "
                                   f"({reason}); is the server running? The URL comes from the config "
                                   f"field llm_base_url or ${ENV_BASE_URL}", timed_out=timed_out) from None
            else:
                try:
                    response = json.loads(raw)
                except ValueError:
                    raise LLMError(f"{self.url} answered with something that is not JSON: "
                                   f"{raw[:200].decode('utf-8', errors='replace')!r}") from None
                self.stats.add("answered")
                return response
            self.stats.add("retries")
            delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (1 + 0.25 * self._jitter.random())
            time.sleep(min(self.max_backoff, wait) if wait is not None else delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- cache -------------------------------------------------------------------------

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cache_read(self, key: str, body: dict[str, Any]) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # unreadable (a foreign or damaged file): ask again, then overwrite
        if not isinstance(entry, dict) or entry.get("request") != json.loads(json.dumps(body)):
            return None
        try:
            answer_text(entry.get("response"))
        except LLMError:
            return None  # no usable answer in it: ask again, then overwrite
        return entry["response"]

    def _sweep(self, folder: Path) -> None:
        """Remove the temporary entries older writers left (``.KEY.PID-XXXX.tmp``, written
        before the cache used :func:`saekit.fileio.atomic_write_bytes`): those whose pid
        is gone, and any older than :data:`STALE_TMP_SECONDS` (a writer takes
        milliseconds). Once per folder per client; ``atomic_write_bytes`` clears its own."""
        with self._sweep_lock:
            if str(folder) in self._swept:
                return
            self._swept.add(str(folder))
        remove_stale_files(folder, _TMP_NAME, max_age=STALE_TMP_SECONDS)

    def _cache_write(self, key: str, body: dict[str, Any], response: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sweep(path.parent)
        # atomic_write_bytes names its temporary by pid and a random suffix: two threads
        # may write the same key at once.
        atomic_write_bytes(path, json.dumps({"request": body, "response": response}, ensure_ascii=False).encode("utf-8"))


def _hint(status: int, model: str) -> str:
    if status in (401, 403):
        return f" (check the API key: config field llm_api_key or ${ENV_API_KEY})"
    if status == 404:
        return (f" (check the URL, which should end in /v1 for most servers, and that the server serves "
                f"model {model!r})")
    return ""


def client_from_config(base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                       *, cache_dir: str | Path | None = None, **kwargs: Any) -> LLMClient | None:
    """An :class:`LLMClient` from config fields, falling back on the environment; ``None``
    when no endpoint is configured anywhere.

    Fields win over ``SAEKIT_LLM_BASE_URL``, ``SAEKIT_LLM_MODEL``, ``SAEKIT_LLM_API_KEY``
    and ``SAEKIT_LLM_CACHE_DIR``. ``cache_dir``: ``None`` takes the environment variable,
    else :data:`DEFAULT_CACHE_DIR`; ``"off"`` turns the cache off. ``kwargs`` go to
    :class:`LLMClient` (``max_concurrency``, ``timeout``, ...); without them,
    ``SAEKIT_LLM_CONCURRENCY`` (requests in flight; 1 suits a local CPU server) and
    ``SAEKIT_LLM_TIMEOUT`` (seconds per request) apply when set.
    """
    base_url = base_url or os.environ.get(ENV_BASE_URL) or None
    if base_url is None:
        return None
    model = model or os.environ.get(ENV_MODEL) or None
    if model is None:
        raise ValueError(f"an LLM endpoint is configured ({base_url}) but no model: set the config field "
                         f"llm_model or the environment variable {ENV_MODEL}")
    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    for key, env, cast in (("max_concurrency", ENV_CONCURRENCY, int), ("timeout", ENV_TIMEOUT, float)):
        if key not in kwargs and os.environ.get(env):
            try:
                kwargs[key] = cast(os.environ[env])
            except ValueError:
                raise ValueError(f"${env} must be a number, got {os.environ[env]!r}") from None
    where = cache_dir if cache_dir is not None else os.environ.get(ENV_CACHE_DIR) or DEFAULT_CACHE_DIR
    return LLMClient(base_url, model, api_key, cache_dir=None if str(where) == CACHE_OFF else where, **kwargs)
