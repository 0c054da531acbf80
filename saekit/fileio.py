"""Atomic writes: a file or a whole directory appears complete or not at all.

Crash consistency, in one place:

- A file is written under a temporary sibling name (``.NAME.tmp-<pid>-<hex>``), fsync'd,
  renamed over ``NAME``, and the folder is fsync'd so the rename survives a power cut.
- A directory is filled under a temporary sibling (``.NAME.partial-<pid>-<random>``);
  every file and folder in it is fsync'd once, then it takes the place of ``NAME`` in one
  step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, with the old one
  parked as ``.NAME.old-<pid>-<hex>`` in between), and the parent folder is fsync'd.
- A process killed mid-write (SIGKILL, OOM killer) leaves its temporary sibling behind.
  Every new directory write of ``NAME`` removes the siblings whose writer pid is no
  longer alive (a live writer's are never touched, so two concurrent writers of ``NAME``
  are safe), and puts a parked ``.NAME.old-*`` back when ``NAME`` itself is missing; the
  first file write into a folder in a process removes the dead writers' temporary files
  there. The pid test
  assumes writers of one folder share a pid namespace (one host, one container).
- A write that runs out of space (``ENOSPC``, ``EDQUOT``, or ``EFBIG`` from a file size
  limit) raises :class:`DiskFullError`, naming the path, after the previous file or
  directory has been left as it was and the temporary one removed.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "DiskFullError",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_stale",
    "disk_full_error",
    "file_sha256",
    "fsync_dir",
    "fsync_file",
    "pid_alive",
    "publish_directory",
    "raising_disk_full",
    "partial_directory",
    "remove_directory",
    "remove_stale_files",
]

#: errno values that mean "no room for these bytes": disk full, quota, file size limit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_OS_ERROR_CODE = re.compile(r"os error (\d+)")  # how Rust extensions (safetensors) report errno


class DiskFullError(OSError):
    """A write ran out of space: the disk is full, a quota is exceeded, or a file size
    limit was hit. ``filename`` is the file or directory that could not be written; the
    previous version of it is left as it was."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full_error(exc: BaseException, path: str | Path) -> DiskFullError | None:
    """``exc`` as a :class:`DiskFullError` naming ``path`` when it is an out-of-space
    error (an ``OSError``, or a library error quoting ``os error N``), else ``None``."""
    if isinstance(exc, DiskFullError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and not isinstance(exc, OSError):
        found = _OS_ERROR_CODE.search(str(exc))
        code = int(found.group(1)) if found else None
    if code not in NO_SPACE_ERRNOS:
        return None
    err = DiskFullError(code, f"no space left to write {path} (disk full or quota exceeded: "
                              f"{os.strerror(code)}); the previous version is left as it was; "
                              "free some space and run again")
    err.filename = str(path)
    return err


@contextmanager
def raising_disk_full(path: str | Path) -> Iterator[None]:
    """Re-raise out-of-space errors in the block as :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except Exception as e:
        err = disk_full_error(e, path)
        if err is None or err is e:
            raise
        raise err from e


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (new files, renames) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms that cannot open directories (Windows) have nothing to sync
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in NO_SPACE_ERRNOS or e.errno == errno.EIO:
            raise
        # EINVAL and the like: the filesystem does not sync directories
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (read in chunks, never whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_file(path: str | Path) -> None:
    """Make a file's data durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- stale temporaries


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (in this pid namespace)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: alive, someone else's
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _temporaries(parent: Path, name: str) -> Iterator[tuple[Path, str, int]]:
    """``(entry, kind, writer pid)`` for the temporary siblings of ``name`` in ``parent``:
    kind ``partial``, ``old`` or ``tmp``. Names are matched exactly (pid, then the random
    suffix ``mkdtemp`` or this module adds; ``.NAME.old-<pid>`` and ``.NAME.tmp-<pid>``
    are this module's older names), so a user's ``NAME.old-2024-01-05`` is never taken
    for one; ``NAME.partial-<pid>-*`` and ``NAME.old-<pid>-*`` (no dot) are the
    names older cache writers used."""
    n = re.escape(name)
    pattern = re.compile(rf"(?:\.{n}\.(partial)-(\d+)-[a-z0-9_]{{8}}"
                         rf"|\.{n}\.(old|tmp)-(\d+)(?:-[a-z0-9_]{{8}})?"
                         rf"|{n}\.(partial|old)-(\d+)-[a-z0-9_]{{8}})")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m:
            kind, pid = next((m.group(i), m.group(i + 1)) for i in (1, 3, 5) if m.group(i))
            yield Path(entry.path), kind, int(pid)


def clean_stale(parent: str | Path, name: str) -> list[Path]:
    """Remove the temporaries of ``parent/name`` left by writers that died (their pid
    is not alive); put a parked ``.NAME.old-*`` back first when ``NAME`` is missing (a
    writer died between the two renames of a non-atomic replace). Returns what it
    removed. Temporaries of live writers are left alone."""
    parent = Path(parent)
    target = parent / name
    removed = []
    for entry, kind, pid in sorted(_temporaries(parent, name), key=lambda t: t[1] != "old"):
        if pid_alive(pid):
            continue
        if kind == "old" and not os.path.lexists(target):
            try:
                os.rename(entry, target)  # the previous good version
                continue
            except OSError:
                pass
        _remove(entry)
        removed.append(entry)
    return removed


_CLEANED: set[str] = set()
_TMP_FILE = re.compile(r"\..+\.tmp-(\d+)(?:-[0-9a-f]{8})?")


def _clean_tmp_files_once(parent: Path) -> None:
    """Remove the ``.NAME.tmp-<pid>[-<hex>]`` files of dead writers in ``parent``, for
    every ``NAME``, once per folder per process: writers of many files in one folder
    (dashboards) should not list the folder for each file."""
    key = str(parent)
    if key in _CLEANED:
        return
    _CLEANED.add(key)
    remove_stale_files(parent, _TMP_FILE)


def remove_stale_files(folder: str | Path, pattern: re.Pattern[str], max_age: float | None = None) -> list[Path]:
    """Remove a dead writer's temporary files from ``folder``.

    Parameters
    ----------
    folder
        Where to look (not recursively); an unreadable folder is left alone.
    pattern
        Matched against whole file names; its first group, when it matched, is the
        writer's pid: the file goes when that process is no longer alive.
    max_age
        Also remove matching files older than this many seconds, whoever wrote them
        (for names without a pid, or a pid reused since).

    Returns
    -------
    list of Path
        What was removed. Files that vanish or cannot be removed meanwhile are skipped.
    """
    now, removed = time.time(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            pid = m.group(1) if pattern.groups else None
            old = max_age is not None and now - entry.stat(follow_symlinks=False).st_mtime > max_age
            if old or (pid is not None and not pid_alive(int(pid))):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


# --------------------------------------------------------------------------- files


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to a temporary name in the same folder, fsync, rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to a temporary name in the same folder, fsync, rename, fsync the folder.

    Raises :class:`DiskFullError` (the old file intact, no temporary left) when the
    disk is full.
    """
    path = Path(path)
    _clean_tmp_files_once(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with raising_disk_full(path):
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# --------------------------------------------------------------------------- directories


def remove_directory(path: str | Path) -> None:
    """Remove a directory so that it is complete or gone, never half-deleted: it is first
    renamed to a temporary sibling that :func:`clean_stale` discards if this is killed."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    doomed = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    os.rename(path, doomed)
    _remove(doomed)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # this filesystem or kernel cannot exchange: fall back
    raise OSError(code, os.strerror(code), str(b))


def publish_directory(tmp: str | Path, path: str | Path) -> None:
    """Put the finished directory ``tmp`` in the place of ``path`` (replacing what is
    there) in one atomic step where the kernel allows it, and fsync the parent."""
    tmp, path = Path(tmp), Path(path)
    if not os.path.lexists(path):
        os.rename(tmp, path)
    elif _exchange(tmp, path):
        _remove(tmp)  # now the previous version
    else:
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)  # put the previous version back
            raise
        _remove(old)
    fsync_dir(path.parent)


def _fsync_tree(root: Path, umask: int) -> None:
    """Give the top-level files the permissions a plain open would have had (mkstemp
    makes private ones) and fsync every file, then every folder (deepest first), once
    each."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            f = os.path.join(dirpath, name)
            if os.path.islink(f):
                continue
            if dirpath == str(root):
                os.chmod(f, 0o666 & ~umask)
            fsync_file(f)
        for name in dirnames:
            d = os.path.join(dirpath, name)
            if not os.path.islink(d):
                fsync_dir(d)
    fsync_dir(root)


def partial_directory(path: str | Path) -> Path:
    """A new, empty temporary sibling of ``path`` to fill (``.NAME.partial-<pid>-<random>``),
    for :func:`publish_directory` to put in its place once complete.

    The parent is created if needed, and the temporaries that dead writers of ``path`` left
    are removed first (:func:`clean_stale`). Out-of-space errors become
    :class:`DiskFullError`.
    """
    path = Path(path)
    with raising_disk_full(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path.parent, path.name)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success its files are fsync'd and
    it replaces ``path`` in one step (the old one is removed only after the new one is in
    place); on an exception it is deleted and ``path`` is left as it was. Out-of-space
    errors raised in the block or while publishing become :class:`DiskFullError`."""
    path = Path(path)
    tmp = partial_directory(path)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        # mkdtemp (and some writers) create private files: give the result the
        # permissions a plain mkdir/open would have had.
        os.chmod(tmp, 0o777 & ~umask)
        _fsync_tree(tmp, umask)
        publish_directory(tmp, path)
    except BaseException as e:
        _remove(tmp)
        err = disk_full_error(e, path)
        if err is not None and err is not e:
            raise err from e
        raise
