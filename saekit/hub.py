"""The Hugging Face hub: whether it can be reached, and what to say when a name is not found.

Without a route to the hub, ``huggingface_hub`` retries every request five times with
back-off before giving up: 23-27 s per model or dictionary on a machine without network
(measured 2026-12-05, ``HF_HUB_OFFLINE`` unset), followed by an error that reads like a bad
name. saekit instead probes the hub once per process with one TCP connect to the endpoint
(``HF_ENDPOINT``, or the proxy ``HTTPS_PROXY`` names), DNS lookup included, bounded by
:data:`PROBE_TIMEOUT_S`, and remembers the answer. When the hub cannot be reached,
:func:`hub_session` runs the hub calls in offline mode, so they read the local cache at
once; :func:`missing_message` then says which of three things happened: a path that does
not exist, no network and not in the local cache, or a name the hub does not have.

``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) skips the probe: offline is what was
asked for.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds the probe waits for DNS and the TCP handshake together.
PROBE_TIMEOUT_S = 2.0
#: A Hugging Face repository id: ``name`` or ``owner/name``.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

_probed: dict[tuple[str, int], bool] = {}
_lock = threading.Lock()


class HubState(NamedTuple):
    """Whether hub calls may go to the network, and why."""

    online: bool
    """True when the endpoint answered the probe (and offline mode was not asked for)."""
    reason: str
    """Why not, in words for an error message ("" when online)."""


def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")  # huggingface_hub's rule


def offline_requested() -> bool:
    """Whether the environment asks for offline mode (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    return _true(os.environ.get("HF_HUB_OFFLINE")) or _true(os.environ.get("TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT``, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _probe_address() -> tuple[str, int]:
    """Where a request to the hub would connect first: the HTTPS proxy when one is set."""
    url = endpoint()
    scheme = urlsplit(url).scheme
    proxy = (os.environ.get(f"{scheme}_proxy") or os.environ.get(f"{scheme.upper()}_PROXY")
             or os.environ.get("all_proxy") or os.environ.get("ALL_PROXY"))
    if proxy:
        url = proxy if "://" in proxy else f"http://{proxy}"
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _connects(address: tuple[str, int], timeout: float) -> bool:
    """One TCP connect, DNS included, within ``timeout`` seconds (``getaddrinfo`` has no
    timeout of its own, so the attempt runs in a daemon thread that is abandoned)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except Exception:  # refused, unresolvable, timed out, or a test's network guard
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True, name="saekit-hub-probe")
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def hub_state(timeout: float = PROBE_TIMEOUT_S) -> HubState:
    """Whether the hub can be reached: probed once per endpoint and process."""
    if offline_requested():
        return HubState(False, "HF_HUB_OFFLINE is set")
    address = _probe_address()
    with _lock:
        if address not in _probed:
            _probed[address] = bool(address[0]) and _connects(address, timeout)
        online = _probed[address]
    return HubState(online, "" if online else f"no network: {address[0]}:{address[1]} cannot be reached")


@contextmanager
def hub_session() -> Iterator[HubState]:
    """Hub calls inside this block read only the local cache when the hub cannot be
    reached (huggingface_hub's offline mode, switched on for the block and restored),
    instead of retrying each request with back-off."""
    state = hub_state()
    if state.online or offline_requested():
        yield state
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub and transformers
    try:
        yield state
    finally:
        constants.HF_HUB_OFFLINE = before


def in_cache(repo_id: str, filename: str = "config.json", revision: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds ``filename`` of ``repo_id``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)
    except Exception:  # an id the cache cannot even name
        return False


def repo_in_cache(repo_id: str, repo_type: str = "model") -> bool:
    """Whether the local Hugging Face cache holds anything of ``repo_id``."""
    from huggingface_hub import constants

    folder = f"{repo_type}s--" + repo_id.replace("/", "--")
    return (Path(constants.HF_HUB_CACHE) / folder).is_dir()


def looks_like_path(spec: str | Path, roots: tuple[Path, ...] = ()) -> bool:
    """Whether a model or dictionary name is meant as a local path rather than a hub id:
    it starts with ``.``, ``/`` or ``~``, is not of the form ``owner/name``, or its first
    component is an existing directory (here or under one of ``roots``), as in
    ``checkpoints/nope``."""
    s = str(spec)
    if isinstance(spec, Path) or s.startswith((".", "/", "~")) or "\\" in s or not REPO_ID.match(s):
        return True
    first = s.split("/", 1)[0]
    return "/" in s and any((root / first).is_dir() for root in (Path.cwd(), *roots))


def missing_message(what: str, spec: str, state: HubState, *, cached: bool, not_on_hub: bool) -> str:
    """Why ``spec`` (a hub id) could not be had, in one sentence that names the remedy."""
    if not_on_hub:
        return f"{what} not on the Hugging Face hub ({endpoint()}): {spec!r}; check the name"
    if state.online:
        return f"{what} {spec!r} could not be fetched from {endpoint()}"
    if cached:
        return f"{what} {spec!r} is in the local Hugging Face cache but could not be read from it"
    if offline_requested():
        return (f"{what} not in the local Hugging Face cache: {spec!r}; HF_HUB_OFFLINE is set, so the hub "
                "was not asked: unset it to download, or download it on a machine with network and copy "
                "the cache (HF_HOME)")
    return (f"no network and not in the local Hugging Face cache: {spec!r} ({state.reason}); download it on "
            "a machine with network (`hf download ID`) and copy the cache (HF_HOME), or set "
            "HF_HUB_OFFLINE=1 to skip the network check")


def caused_by(error: BaseException, *names: str) -> bool:
    """Whether ``error`` or an exception in its cause/context chain is of a class named in ``names``."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(type(e).__name__ == n or n in (c.__name__ for c in type(e).__mro__) for n in names):
            return True
        e = e.__cause__ or e.__context__
    return False
