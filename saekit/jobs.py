"""What every long-running command shares: claiming its output directory and stopping
cleanly on SIGINT/SIGTERM.

Output directories. A command never silently replaces an earlier result: a directory
that holds anything refuses the job unless ``--overwrite`` (start again) or, where the
job can continue, ``--resume``. :func:`claim_output` is the one place that says so.

Interruption. Inside :func:`graceful`, the first SIGINT or SIGTERM only sets a flag;
loops that can stop at a consistent point (a training step, an SNMF pass) poll
:func:`requested`, write their checkpoint and raise :class:`Interrupted`. A second
signal interrupts at once. The command line turns :class:`Interrupted` (and a plain
``KeyboardInterrupt``) into one line that says how to resume.
"""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist

_requested: list[str] = []
_depth = [0]  # graceful() blocks open (nested when several trainers run in lockstep)


class Interrupted(Exception):
    """A job stopped by SIGINT/SIGTERM at a consistent point; ``str(e)`` says where."""


class OutputExists(FileExistsError):
    """An output directory holds an earlier result; the message names the flags."""


MARKER = ".saekit-output"
"""Written into every output directory a command claims: ``--overwrite`` empties only
directories that carry it, so a mistyped ``--out`` (``.``, a home directory) is never
wiped."""


def claim_output(path: str | Path, *, overwrite: bool = False, resume: bool = False, what: str = "output",
                 can_resume: bool = False) -> Path:
    """Make ``path`` ready for a job and return it.

    Absent or empty: created. Holding something: refused (:class:`OutputExists`, naming
    the flags) unless ``overwrite`` (emptied, when saekit wrote it) or ``resume`` (kept
    as it is, for a job that continues from what it finds). ``can_resume``: the job
    can continue, so the refusal mentions ``--resume``.
    """
    path = Path(path)
    if overwrite and resume:
        raise ValueError("--overwrite and --resume contradict each other: choose one")
    if path.exists() and not path.is_dir():
        raise OutputExists(f"{path} is a file, not a directory; choose another --out")
    if path.is_dir() and any(path.iterdir()) and not resume:
        if not overwrite:
            hint = "--resume to continue it, " if can_resume else ""
            raise OutputExists(f"{path} already holds a {what}; pass {hint}--overwrite to replace it, "
                               "or choose another --out")
        if not (path / MARKER).is_file():
            raise OutputExists(f"{path} holds files saekit did not write (no {MARKER}); --overwrite "
                               "only replaces saekit's own output: choose another --out")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        (path / MARKER).write_text(f"{what}\n")
    return path


def requested() -> str | None:
    """The name of the signal that asked the current job to stop, if one did."""
    return _requested[0] if _requested else None


@contextmanager
def graceful() -> Iterator[None]:
    """Within this block the first SIGINT/SIGTERM sets :func:`requested` instead of
    raising, so the job can finish its step and checkpoint; a second one raises
    ``KeyboardInterrupt``. Outside the main thread (where handlers cannot be set) and
    in a ``torch.distributed`` job (whose ranks must stop at the same step) signals
    keep their usual effect."""
    if _depth[0] or threading.current_thread() is not threading.main_thread() or (
            dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        _depth[0] += bool(_depth[0])
        try:
            yield
        finally:
            _depth[0] -= bool(_depth[0])
        return

    def handler(signum, frame):
        if _requested:
            raise KeyboardInterrupt
        _requested.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _depth[0] = 1
    try:
        yield
    finally:
        _depth[0] = 0
        for s, h in old.items():
            signal.signal(s, h)
        _requested.clear()
