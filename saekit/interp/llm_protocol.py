"""OpenAI's chat-completions protocol as :class:`saekit.interp.llm.LLMClient` speaks it:
the endpoint of a base URL, the message list, the server's error text, ``Retry-After``.
Only the standard library."""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

Messages = str | Sequence[dict[str, str]]


def chat_completions_url(base_url: str) -> str:
    """The chat-completions endpoint of a base URL.

    ``http://host:8000`` (no path) gets ``/v1/chat/completions``; anything with a path
    (``http://host:8000/v1``, OpenAI's ``https://api.openai.com/v1``, a gateway prefix)
    gets ``/chat/completions``; a URL that already ends in ``/chat/completions`` is kept.
    """
    parts = urllib.parse.urlsplit(str(base_url).strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"LLM base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                         f"got {base_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_messages(messages: Messages) -> list[dict[str, str]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out = list(messages)
    if not out:
        raise ValueError("messages is empty; expected a prompt string or a list of "
                         "{'role': ..., 'content': ...} dicts")
    for i, m in enumerate(out):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ValueError(f"messages[{i}] must be a dict with string 'role' and 'content', got {m!r}")
    return out


def error_message(raw: bytes) -> str:
    """The server's error text: OpenAI's ``{"error": {"message": ...}}``, else the body."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return text[:300]


def retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to exponential backoff
