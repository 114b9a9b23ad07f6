"""Syncing a segment writer: one ``fdatasync`` serving every thread waiting (group commit),
the ``"interval"`` thread's syncs, and, after a failed ``fdatasync``, the records not known to
be synced written again into a new segment (the reader yields a sequence number once, so the
duplicate is harmless)."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .errors import JournalSyncError
from .segment_files import _Segment

__all__ = ["GroupCommit", "SyncMode"]

logger = logging.getLogger("writebehind.journal")

SyncMode = Literal["process", "interval", "always"]


def _check_sync(sync: str) -> SyncMode:
    if sync == "process":
        return "process"
    if sync == "interval":
        return "interval"
    if sync == "always":
        return "always"
    raise ValueError(f"sync: expected 'process', 'interval' or 'always', got {sync!r}")


class GroupCommit:
    """The syncing half of :class:`~.writer.SegmentWriter`, which it is a base of: the state
    below is the writer's, kept under its lock ``_cond``."""

    path: Path
    sync_mode: SyncMode
    sync_interval: float
    _cond: threading.Condition
    _clock: Callable[[], float]
    _fdatasync: Callable[[int], None]
    _fd: int
    _closed: bool
    _disk_bytes: int
    _written_seq: int  # the last seq handed to os.write
    _synced_seq: int  # the last seq known to be on disk
    _syncing: bool  # a thread is in fdatasync, the lock released
    _sync_error: JournalSyncError | None
    _unsynced: list[tuple[int, bytes]]  # (last seq, frames) written but not known synced
    _last_sync: float

    # The writer's, used when a failed sync writes the unsynced records again.
    @property
    def _current(self) -> _Segment:
        raise NotImplementedError

    def _check_usable(self) -> None:
        raise NotImplementedError

    def _open_segment(self, first_seq: int) -> None:
        raise NotImplementedError

    def _write_all(self, fd: int, data: bytes) -> None:
        raise NotImplementedError

    def sync_upto(self, seq: int) -> None:
        """Return once an ``fdatasync`` covered record ``seq`` (one call serves every thread
        waiting); raises :class:`JournalSyncError` if that cannot be done."""
        with self._cond:
            self._sync_until(seq)

    def sync(self) -> None:
        """``fdatasync`` what was appended so far (in any mode); raises
        :class:`JournalSyncError` if that cannot be done."""
        with self._cond:
            self._check_usable()
            self._sync_until(self._written_seq)

    def _sync_until(self, seq: int) -> None:
        """Return once ``fdatasync`` covered ``seq``; one thread syncs for all (group commit)."""
        while self._synced_seq < seq:
            if self._sync_error is not None:
                raise self._sync_error
            if self._syncing:
                self._cond.wait()
                continue
            target, fd = self._written_seq, self._fd
            self._syncing = True
            self._cond.release()
            error: OSError | None = None
            try:
                self._fdatasync(fd)
            except OSError as exc:
                error = exc
            finally:
                self._cond.acquire()
                self._syncing = False
                self._cond.notify_all()
            if error is None:
                self._synced(target)
            else:
                self._sync_failed(error)

    def _synced(self, target: int) -> None:
        self._synced_seq = max(self._synced_seq, target)
        self._unsynced = [(last, g) for last, g in self._unsynced if last > target]
        self._last_sync = self._clock()

    def _sync_failed(self, error: OSError) -> None:
        """After a failed fdatasync the kernel may have dropped the dirty pages and will not
        report it again: close the segment and write what was not synced to a new one."""
        logger.error(
            "journal %s: fdatasync failed (%s); writing the %d unsynced groups to a new segment",
            self.path,
            error,
            len(self._unsynced),
        )
        pending = self._unsynced
        target = self._written_seq
        if self.sync_mode == "process":
            # Nothing kept to write again: the caller of sync() learns the data may be lost.
            raise JournalSyncError(
                error.errno or errno.EIO, f"journal {self.path}: fdatasync failed ({error})"
            ) from error
        try:
            os.close(self._fd)
            first = self._synced_seq + 1
            self._open_segment(first)
            for _last, group in pending:
                self._write_all(self._fd, group)
                self._current.size += len(group)
                self._disk_bytes += len(group)
            self._current.last_seq = target
            self._fdatasync(self._fd)
        except OSError as exc:
            self._sync_error = JournalSyncError(
                exc.errno or errno.EIO,
                f"journal {self.path}: fdatasync failed ({error}) and writing the unsynced "
                f"records again failed ({exc}); records after {self._synced_seq} may not be "
                "durable",
            )
            self._cond.notify_all()
            raise self._sync_error from exc
        self._synced(target)

    def _sync_loop(self) -> None:
        with self._cond:
            while not self._closed:
                if self._written_seq <= self._synced_seq or self._syncing:
                    self._cond.wait(self.sync_interval)
                    continue
                due = self._last_sync + self.sync_interval - self._clock()
                if due > 0:
                    self._cond.wait(due)
                    continue
                try:
                    self._sync_until(self._written_seq)
                except JournalSyncError:
                    return  # raised to the next append by _check_usable
                except Exception:
                    logger.exception("journal %s: the background sync failed", self.path)
                    self._cond.wait(self.sync_interval)
