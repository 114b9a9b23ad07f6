"""Instance directories: one process's journal is ``<root>/<queue name>/<instance>/``, locked
with ``fcntl.flock`` on its ``LOCK`` file while a process uses it. An instance is named
``<creation time in ns, 16 hex digits>-<host>-<pid>-<random>``, so names sort oldest first.
The next process takes over one whose lock is free (an :class:`Orphan`) and removes it once
what it holds is committed."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .private import (
    PRIVATE_FILE,
    check_journal_folders,
    make_folder,
    make_folders,
    make_private,
    open_private,
)
from .reader import Record, SegmentReader
from .segment_files import _SUFFIX, _fsync_dir

__all__ = ["Orphan", "instance_name", "take_over"]

logger = logging.getLogger("writebehind.journal")

_LOCK_NAME = "LOCK"


class _InstanceLock:
    """An instance directory and the flock held on its LOCK file."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def _try_lock(directory: Path) -> _InstanceLock | None:
    """Lock an existing instance directory if no process holds it."""
    try:
        fd = open_private(directory / _LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        if any(directory.glob(f"*{_SUFFIX}")):
            # Its process may still be alive, holding a lock on a file since deleted: taking
            # it over could write its rows while it writes them too.
            logger.warning(
                "journal %s has segments but no %s file: not replayed; if its process is "
                "gone, create the empty file %s to have it replayed",
                directory,
                _LOCK_NAME,
                directory / _LOCK_NAME,
            )
        return None
    except OSError as error:
        logger.error("journal %s: its lock cannot be opened (%s); left as it is", directory, error)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # The previous holder may have removed the directory between our open and our flock.
    try:
        same = os.fstat(fd).st_ino == os.stat(directory / _LOCK_NAME).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return _InstanceLock(directory, fd)


def instance_name() -> str:
    """A new instance's name. Creation time first: take_over() returns dead instances oldest
    first, so that rows of one key left by two processes that died one after the other replay
    in order."""
    return f"{time.time_ns():016x}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _new_instance(root: Path, queue: str, name: str | None = None) -> _InstanceLock:
    """Create and lock a fresh instance directory under ``<root>/<queue>/``."""
    if not queue or "/" in queue or queue.startswith("."):
        raise ValueError(f"queue: {queue!r} cannot name a directory")
    parent = root / queue
    # Checked at start, and again now: made meanwhile by someone else, they are refused here,
    # before anything is made in them, and after (a folder swapped in meanwhile).
    check_journal_folders(root, queue)
    make_folders(parent)
    check_journal_folders(root, queue)
    name = name or instance_name()
    # Built under a hidden name and locked before it is renamed into view: take_over() never
    # sees an instance that is not locked yet.
    staging = parent / f".{name}.new"
    make_folder(staging)
    fd = -1
    try:
        fd = open_private(staging / _LOCK_NAME, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = parent / name
        os.rename(staging, final)
        _fsync_dir(parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()
        raise
    return _InstanceLock(final, fd)


class Orphan:
    """An instance directory left by a process that no longer holds its lock, now locked by
    this process. Read it with :meth:`records`, then :meth:`remove` it once what it holds is
    committed; or :meth:`release` it for another process to take."""

    def __init__(self, lock: _InstanceLock) -> None:
        self._lock = lock
        self.path = lock.path
        self.reader = SegmentReader(lock.path)

    def records(self, after: int = 0) -> Iterator[Record]:
        """The orphan's records with seq > ``after`` (see :class:`SegmentReader`)."""
        return self.reader.records(after)

    def remove(self) -> None:
        """Delete the directory, then release the lock. Call it only after the records are
        committed elsewhere. ``*.corrupt`` files are kept for inspection, moved to
        ``<root>/<queue>/.corrupt/<instance>.<segment>.corrupt``."""
        _remove_instance(self.path)
        self._lock.release()

    def release(self) -> None:
        """Release the lock, leaving the directory for another process."""
        self._lock.release()


def _remove_instance(directory: Path) -> None:
    """Delete a locked instance directory (its lock is released after). ``*.corrupt`` files
    are kept, moved to ``<root>/<queue>/.corrupt/<instance>.<segment>.corrupt``."""
    kept = directory.parent / ".corrupt"
    for path in directory.iterdir():
        if path.name.endswith(".corrupt"):
            if kept.is_symlink() or (kept.exists() and not kept.is_dir()):
                kept = directory.parent / f".corrupt-{secrets.token_hex(4)}"  # not that one
            if kept.is_dir():
                make_private(kept)  # made by an older version, maybe 0755
            else:
                with contextlib.suppress(FileExistsError):  # made meanwhile by another process
                    make_folder(kept)
            moved = kept / f"{directory.name}.{path.name}"
            os.replace(path, moved)
            found = moved.lstat()
            if stat.S_ISREG(found.st_mode) and found.st_nlink == 1:
                os.chmod(moved, PRIVATE_FILE)  # set aside by an older version, maybe 0644
        elif path.name == _LOCK_NAME:
            continue
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    (directory / _LOCK_NAME).unlink()
    directory.rmdir()
    _fsync_dir(directory.parent)


def take_over(root: str | os.PathLike[str], queue: str) -> list[Orphan]:
    """Lock every instance directory of ``queue`` under ``root`` whose lock is free (its
    process died or closed it), in name order. Safe against other processes doing the same:
    each orphan is locked by exactly one of them."""
    parent = Path(root) / queue
    if not parent.is_dir():
        return []
    orphans: list[Orphan] = []
    for path in sorted(parent.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        if path.is_symlink():  # its files could be anyone's: never replayed, never removed
            logger.error("journal %s is a symbolic link, not a folder: not replayed", path)
            continue
        lock = _try_lock(path)
        if lock is not None:
            orphans.append(Orphan(lock))
    return orphans
