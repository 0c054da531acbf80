"""Shared fixtures and the network guard.

The guard: any test that opens a socket connection outside loopback fails. saekit's
tests run offline; a connection elsewhere means a download slipped in.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

# Under load (another job on the cores) OpenMP's busy-waiting workers turn each small
# torch op into a wait for a descheduled thread: 3x slower runs measured with one busy
# core. Passive workers cost ~15% idle on the smallest ops. Set before torch loads, and
# inherited by the subprocesses tests start (the Makefile sets it too, in case a plugin
# imports torch first).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO_LM = Path(os.environ.get("SAEKIT_TEST_DEMO_LM", ROOT / "checkpoints" / "demo-lm"))


class NetworkAccessError(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name: resolve without touching the network for loopback names
        return False


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _guarded(original):
    def connect(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NetworkAccessError(f"test tried to open a network connection to {address!r}; "
                                     "saekit tests must stay offline (loopback only)")
        return original(self, address, *args, **kwargs)
    return connect


def pytest_configure(config):
    socket.socket.connect = _guarded(_connect)
    socket.socket.connect_ex = _guarded(_connect_ex)
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def demo_model():
    import saekit

    return saekit.load_model(DEMO_LM, device="cpu")


@pytest.fixture(scope="session")
def demo_tokens(demo_model):
    import saekit

    return saekit.load_tokens("demo", demo_model, n_tokens=48 * 128, seed=3)


HOOKS = ["blocks.1.mlp.hook_post", "blocks.1.hook_resid_post", "blocks.2.attn.hook_z"]


@pytest.fixture(scope="session")
def demo_acts(demo_model, demo_tokens):
    """One harvested set of three hooks, shared by the session."""
    import saekit

    return saekit.harvest(demo_model, HOOKS, demo_tokens, batch_size=16)


def train_in_one_and_two_processes(recipe: str, sets: list[str], tmp_path: Path):
    """``saekit train recipe --set ...`` in one process, then under torchrun with two gloo
    processes; returns the two dictionaries ``(one, two)``."""
    import subprocess
    import sys

    import saekit

    base = [str(ROOT / "train" / recipe)] + [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "saekit.cli", "train", *base, "--out", str(tmp_path / "one")],
                   env=env, check=True, timeout=240, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "saekit.cli", "train", *base, "--out", str(tmp_path / "two")],
                       env=env, timeout=300, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return (saekit.load_dictionary(tmp_path / "one" / "dictionary"),
            saekit.load_dictionary(tmp_path / "two" / "dictionary"))
