"""A real chat-completions server on loopback for tests that talk to an LLM.

:class:`ScriptedServer` speaks OpenAI's chat-completions protocol on 127.0.0.1, records
every request (path, headers, JSON body), tracks how many are in flight at once, and
answers from a script: ``script(body)`` returns the answer text (status 200) or a
:data:`Reply`. Test modules import it as ``from llm_server import ScriptedServer``
(pytest's default import mode puts ``tests/`` on ``sys.path``, since it has no
``__init__.py``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any, dict[str, str]]  # status, JSON payload (or raw bytes), extra headers


def completion(text: str, model: str = "judge") -> dict[str, Any]:
    """A chat-completions answer as OpenAI's servers shape it."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ScriptedServer:
    """A chat-completions server on 127.0.0.1 whose answers come from ``script(body) -> Reply``
    (or a string: the answer text with status 200)."""

    def __init__(self, script: Callable[[dict[str, Any]], Reply | str], delay: float = 0.0):
        self.script, self.delay = script, delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest's output clean
                pass

            def do_POST(self) -> None:
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    body = json.loads(raw)
                    with server.lock:
                        server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    if server.delay:
                        time.sleep(server.delay)
                    reply = server.script(body)
                    status, payload, headers = (200, completion(reply), {}) if isinstance(reply, str) else reply
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
