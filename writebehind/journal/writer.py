"""Appending to one process's journal: groups of payloads framed as records and written with
one ``os.write`` each, segments rotated at ``segment_bytes``, the disk used bounded by
``max_bytes`` (an append waits for room, on a full disk too), and the segments whose records
are all committed deleted. Syncing is :class:`~.group_commit.GroupCommit`'s."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import JournalClosed, JournalFull, JournalSyncError
from .framing import HEADER_SIZE, META_SEQ, RECORD_OVERHEAD, encode_header, encode_record
from .group_commit import GroupCommit, SyncMode, _check_sync
from .instances import _new_instance, _remove_instance
from .private import open_private
from .segment_files import _fsync_dir, _Segment, _segment_name

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_SEGMENT_BYTES", "SegmentWriter"]

logger = logging.getLogger("writebehind.journal")

DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
# How often an append blocked on a full disk tries again: space may be freed by anyone.
_ENOSPC_RETRY = 0.05


class SegmentWriter(GroupCommit):
    """The writing side: one process's instance directory, appended to by any thread.

    :meth:`append` frames a group of payloads as consecutive records and writes them with one
    ``os.write``; when it returns the records survive a kill of the process. ``sync`` says what
    else: ``"process"`` nothing more; ``"interval"`` a background thread calls ``fdatasync`` at
    most every ``sync_interval`` seconds (a power cut loses at most about that much);
    ``"always"`` ``append`` returns after an ``fdatasync`` that covers its records, one call
    serving every thread waiting (group commit). A failed ``fdatasync`` is not retried: the
    segment is closed, the records not known to be synced are written to a new segment and
    synced; if that fails too, :class:`JournalSyncError` is raised (to the ``"always"`` appends
    waiting, or, for ``"interval"``, to the next append).

    Segments rotate at ``segment_bytes``. The segments on disk are bounded by ``max_bytes``:
    an append that does not fit, or that meets a full disk (ENOSPC), waits up to ``timeout``
    seconds for :meth:`release_upto` to free space, then raises :class:`JournalFull`.
    Thread-safe; the lock is held across the ``os.write`` (the page cache, not the disk) but
    never across an ``fdatasync``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        queue: str,
        *,
        sync: SyncMode = "process",
        sync_interval: float = 0.1,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        self.sync_mode = _check_sync(sync)
        if not sync_interval > 0:
            raise ValueError(f"sync_interval: expected a positive number, got {sync_interval!r}")
        if segment_bytes < HEADER_SIZE + RECORD_OVERHEAD:
            raise ValueError(f"segment_bytes: {segment_bytes!r} is too small")
        if max_bytes < segment_bytes:
            raise ValueError(f"max_bytes: {max_bytes!r} is below segment_bytes ({segment_bytes})")
        self.sync_interval = sync_interval
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._clock = clock
        self._write: Callable[[int, bytes], int] = os.write
        self._fdatasync: Callable[[int], None] = os.fdatasync
        self._instance = _new_instance(Path(root), queue, name)
        self.path = self._instance.path
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)  # the lock taken at once on put()'s path
        self._closed = False
        self._next_seq = 1
        self._segments: list[_Segment] = []
        self._disk_bytes = 0  # the sum of the segments' sizes, kept rather than summed per append
        self._fd = -1
        self._written_seq = 0  # the last seq handed to os.write
        self._synced_seq = 0  # the last seq known to be on disk
        self._syncing = False
        self._sync_error: JournalSyncError | None = None
        # Frames written but not yet known synced, kept to write them again if a sync fails.
        self._unsynced: list[tuple[int, bytes]] = []
        self._metas: list[bytes] = []  # every meta payload described, in order
        self._pending_meta = b""  # meta records to write before the next record
        self._last_sync = clock()
        try:
            self._open_segment(1)
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk, say: leave no empty instance
                _remove_instance(self.path)
            self._instance.release()
            raise
        self._thread: threading.Thread | None = None
        if self.sync_mode == "interval":
            self._thread = threading.Thread(
                target=self._sync_loop, name="writebehind-journal-sync", daemon=True
            )
            self._thread.start()

    # -- public ---------------------------------------------------------------------------

    @property
    def disk_bytes(self) -> int:
        """The size of the segments on disk."""
        with self._cond:
            return self._disk_bytes

    @property
    def last_seq(self) -> int:
        """The sequence number of the last record appended (0 before the first)."""
        with self._cond:
            return self._written_seq

    def append(self, payloads: Sequence[bytes], timeout: float | None = None) -> range:
        """Append the payloads as consecutive records; return their sequence numbers.

        Blocks while the journal is full (``timeout`` None: until space is freed; 0: not at
        all), then raises :class:`JournalFull`. Raises :class:`JournalClosed` after
        :meth:`close`, :class:`JournalSyncError` as described in the class docstring.
        """
        if not payloads:
            return range(0)
        size = sum(RECORD_OVERHEAD + len(p) for p in payloads)
        if size + HEADER_SIZE > self.max_bytes:
            raise ValueError(
                f"payloads: {size} bytes cannot fit in a journal of max_bytes={self.max_bytes}"
            )
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            self._check_usable()
            first = self._write_group(payloads, size, deadline)
            last = first + len(payloads) - 1
            if self.sync_mode == "always":
                self._sync_until(last)
            return range(first, last + 1)

    def append_nowait(self, payloads: Sequence[bytes]) -> range | None:
        """Append as :meth:`append` does, but without waiting for room (None when the journal
        is full, by ``max_bytes`` or a full disk) and without the ``"always"`` sync: the caller
        calls :meth:`sync_upto` after releasing its own locks."""
        if not payloads:
            return range(0)
        size = sum(RECORD_OVERHEAD + len(p) for p in payloads)
        if size + HEADER_SIZE > self.max_bytes:
            raise ValueError(
                f"payloads: {size} bytes cannot fit in a journal of max_bytes={self.max_bytes}"
            )
        with self._cond:
            self._check_usable()
            try:
                first = self._write_group(payloads, size, self._clock())
            except JournalFull:
                return None
            return range(first, first + len(payloads))

    def append_one_nowait(self, payload: bytes) -> int | None:
        """:meth:`append_nowait` of one payload, on ``put()``'s path: its sequence number, or
        None when the journal is full."""
        size = RECORD_OVERHEAD + len(payload)
        with self._mutex:
            current = self._segments[-1]
            if (
                not self._closed
                and self._sync_error is None
                and not self._pending_meta
                and self._disk_bytes + size + HEADER_SIZE <= self.max_bytes
                and current.size + size <= self.segment_bytes
            ):
                seq = self._next_seq
                frame = encode_record(seq, payload)
                try:
                    written = self._write(self._fd, frame)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    written = -1
                if written == size:
                    current.size += size
                    self._disk_bytes += size
                    current.last_seq = self._written_seq = seq
                    self._next_seq = seq + 1
                    if self.sync_mode != "process":
                        self._unsynced.append((seq, frame))
                    return seq
                # A full disk, or a short write: cut what reached the file, as the general
                # path does, and let it wait or say the journal is full.
                os.ftruncate(self._fd, current.size)
        # A new segment, a full journal or disk, a closed journal: the general path says which.
        seqs = self.append_nowait([payload])
        return None if seqs is None else seqs[0]

    def wait_room(self, payload_bytes: int, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for room for ``payload_bytes`` of payloads (a
        release, or, on a full disk, a short while before trying again)."""
        needed = payload_bytes + RECORD_OVERHEAD
        with self._cond:
            self._check_usable()
            if self._room(needed):  # room by max_bytes: the disk was full
                self._cond.wait(min(timeout, _ENOSPC_RETRY))
            else:
                self._cond.wait(timeout)

    def describe(self, meta: bytes) -> None:
        """Keep ``meta`` as a meta record (seq 0): before the next record appended, and at the
        start of every segment made from now on. Describing the same bytes again does
        nothing."""
        with self._cond:
            if meta in self._metas:
                return
            self._metas.append(meta)
            self._pending_meta += encode_record(META_SEQ, meta)

    def release_upto(self, seq: int) -> int:
        """Delete the closed segments whose records all have sequence numbers <= ``seq``;
        return the number of bytes freed. Call it only once what they hold is committed.
        Raises the OSError of a segment that cannot be deleted (a read-only file system): it
        and the segments after it stay, and a later call tries again. One already gone is
        freed."""
        with self._cond:
            released = 0
            try:
                while len(self._segments) > 1 and self._segments[0].last_seq <= seq:
                    segment = self._segments[0]
                    with contextlib.suppress(FileNotFoundError):
                        segment.path.unlink()
                    self._segments.pop(0)
                    released += segment.size
                    self._disk_bytes -= segment.size
            finally:
                if released:
                    self._cond.notify_all()
            return released

    def close(self, remove: bool = False) -> None:
        """Sync (unless ``sync="process"``), close the segment and release the instance's
        lock. Idempotent. The directory stays for the next process to replay, unless
        ``remove`` (every record is done): then it is deleted before the lock is released."""
        with self._cond:
            if self._closed:
                return
            if self.sync_mode != "process" and self._sync_error is None:
                try:
                    self._sync_until(self._written_seq)
                except JournalSyncError:
                    logger.exception("journal %s: the final sync failed", self.path)
            self._closed = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)
        with self._cond:
            while self._syncing:  # a sync() of another thread still uses the descriptor
                self._cond.wait()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        try:
            if remove:
                _remove_instance(self.path)
        finally:
            self._instance.release()  # left behind, the journal is another process's to take

    def forget_after_fork(self) -> None:
        """In a forked child: close the descriptors inherited from the parent, without syncing
        or unlocking (the lock is the parent's: an unlock here would release it for the parent
        too), so the parent's instance becomes free when the parent dies. The child makes a
        journal of its own."""
        self._closed = True
        self._thread = None  # threads do not survive fork
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._instance.release()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- under the lock -------------------------------------------------------------------

    @property
    def _current(self) -> _Segment:
        return self._segments[-1]

    def _check_usable(self) -> None:
        if self._closed:
            raise JournalClosed(f"journal {self.path} is closed")
        if self._sync_error is not None:
            raise self._sync_error

    def _room(self, needed: int) -> bool:
        return self._disk_bytes + needed + HEADER_SIZE <= self.max_bytes

    def _wait(self, deadline: float | None, why: str, poll: float | None) -> None:
        """Wait for a change (or ``poll`` seconds); raise JournalFull past the deadline."""
        remaining = None if deadline is None else deadline - self._clock()
        if remaining is not None and remaining <= 0:
            raise JournalFull(
                f"journal {self.path} is full ({why}: {self._bytes_locked()} bytes on disk, "
                f"max_bytes={self.max_bytes}); release_upto() frees segments once committed"
            )
        if poll is not None:
            remaining = poll if remaining is None else min(poll, remaining)
        self._cond.wait(remaining)
        self._check_usable()

    def _bytes_locked(self) -> int:
        return self._disk_bytes

    def _open_segment(self, first_seq: int) -> None:
        number = self._segments[-1].number + 1 if self._segments else 1
        path = self.path / _segment_name(number)
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        # The meta records every segment starts with, so that its records never need those
        # of a segment released before it.
        header = encode_header(first_seq) + b"".join(
            encode_record(META_SEQ, meta) for meta in self._metas
        )
        try:
            self._write_all(fd, header)
            if self.sync_mode != "process":
                # The new file's name must reach the disk too, not only its data.
                os.fdatasync(fd)
                _fsync_dir(self.path)
        except BaseException:
            os.close(fd)
            path.unlink()
            raise
        self._fd = fd
        self._segments.append(_Segment(number, path, first_seq, first_seq - 1, len(header)))
        self._disk_bytes += len(header)
        self._pending_meta = b""  # the new segment has them all

    def _write_all(self, fd: int, data: bytes) -> None:
        written = self._write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")

    def _write_group(self, payloads: Sequence[bytes], size: int, deadline: float | None) -> int:
        """Frame and write the group with one os.write; return its first sequence number.
        Waits may release the lock, so every condition is checked again after one."""
        while True:
            if not self._room(size):
                self._wait(deadline, "max_bytes", None)
                continue
            current = self._current
            if current.size + size > self.segment_bytes and current.size > HEADER_SIZE:
                if self.sync_mode != "process" and self._synced_seq < self._written_seq:
                    # The old segment's records must be on disk before its descriptor goes.
                    self._sync_until(self._written_seq)
                    continue
                old = self._fd
                try:
                    self._open_segment(self._next_seq)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    self._wait(deadline, "disk full", _ENOSPC_RETRY)
                    continue
                os.close(old)
                continue
            first = self._next_seq
            group = self._pending_meta + b"".join(
                encode_record(first + i, p) for i, p in enumerate(payloads)
            )
            try:
                self._write_all(self._fd, group)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                # Cut what part of the group reached the file: a reader must not find half of it.
                os.ftruncate(self._fd, current.size)
                self._wait(deadline, "disk full", _ENOSPC_RETRY)
                continue
            break
        self._pending_meta = b""
        last = first + len(payloads) - 1
        current.size += len(group)
        self._disk_bytes += len(group)
        current.last_seq = last
        self._next_seq = last + 1
        self._written_seq = last
        if self.sync_mode != "process":
            self._unsynced.append((last, group))
        return first
