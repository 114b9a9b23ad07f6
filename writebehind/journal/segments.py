"""Append-only segment files: the file layer of the durable journal.

Layout: ``<root>/<queue name>/<instance>/`` holds one process's journal, locked with
``fcntl.flock`` on its ``LOCK`` file while a process uses it. An instance is named
``<creation time in ns, 16 hex digits>-<host>-<pid>-<random>``, so names sort oldest first.
Inside, segment files named ``<segment number>.seg`` (ten digits, so names sort in write
order), each made of::

    header  (24 bytes)  magic b"wbjournl" | version u16 | flags u16 (0) | first seq u64 | crc32 u32
    record  (16 bytes + payload)  length u32 | crc32 u32 | seq u64 | payload

All integers little-endian. A record's CRC covers its length, its sequence number and its payload,
so a record moved, cut or overwritten by another is detected, and a record can be recognised
without its segment's header (the reader resynchronises on the next valid record after damage,
as PostgreSQL's WAL and LevelDB's log do). The CRC is zlib's CRC-32: CRC-32C is not in the
standard library, and CRC-32 detects every burst error up to 32 bits and any odd number of flipped
bits, which is what torn writes and bit rot produce; the cost is small next to the system calls.

Sequence numbers are per instance, start at 1, and increase by one per record. They are
contiguous, so the reader counts a gap as records lost. A record numbered 0 is a *meta* record
(version 2): a payload that describes the records after it (the queue's: what the columns of
its rows are), given to :meth:`SegmentWriter.describe`. Every segment holds, right after its
header, each meta record described before it was made, and one described later is written
before the next record: so every record is preceded, in its own segment, by the meta records
it may need, whatever segments are released. Version 1 segments have none.

After a failed ``fdatasync`` the records not known to be synced are written again into a new
segment; the reader yields a sequence number once (the first copy), so the duplicate is
harmless.

Nothing here knows what a payload is; the queue encodes rows.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from writebehind.errors import WriteBehindError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SEGMENT_BYTES",
    "JournalClosed",
    "JournalError",
    "JournalFull",
    "JournalSyncError",
    "JournalVersionError",
    "Orphan",
    "ReadStats",
    "Record",
    "SegmentReader",
    "SegmentWriter",
    "SyncMode",
    "take_over",
]

logger = logging.getLogger("writebehind.journal")

SyncMode = Literal["process", "interval", "always"]

MAGIC = b"wbjournl"
VERSION = 2
_READ_VERSIONS = (1, 2)  # version 1 (no meta records) is still read
META_SEQ = 0
"""The sequence number of a meta record (see the module's docstring)."""
_HEADER = struct.Struct("<8sHHQI")
_HEADER_BODY = struct.Struct("<8sHHQ")
HEADER_SIZE = _HEADER.size
_RECORD = struct.Struct("<IIQ")
_RECORD_CRC_INPUT = struct.Struct("<IQ")
RECORD_OVERHEAD = _RECORD.size
# A bound on a payload's length: a damaged length field beyond it is rejected without reading on.
MAX_PAYLOAD = 64 * 1024 * 1024

DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
_SUFFIX = ".seg"
_LOCK_NAME = "LOCK"
# How often an append blocked on a full disk tries again: space may be freed by anyone.
_ENOSPC_RETRY = 0.05


class JournalError(WriteBehindError):
    """Base class of the journal's errors."""


class JournalFull(JournalError):
    """The journal is at ``max_bytes`` (or the disk is full) and the timeout ran out."""


class JournalClosed(JournalError, RuntimeError):
    """The journal was closed."""


class JournalSyncError(JournalError, OSError):
    """``fdatasync`` failed and the records could not be written durably again: the records of
    the append that raised may or may not survive a power cut (they do survive a process kill)."""


class JournalVersionError(JournalError):
    """A segment was written by a newer format version: not corruption, so nothing is set aside."""


@dataclass(frozen=True)
class Record:
    """One record read back: its sequence number and its payload."""

    seq: int
    payload: bytes


@dataclass
class ReadStats:
    """What a reader found besides good records (for metrics and logs)."""

    records: int = 0
    corrupt_regions: int = 0
    corrupt_bytes: int = 0
    lost_sequences: int = 0
    truncated_bytes: int = 0
    set_aside: list[Path] = field(default_factory=list)


def encode_header(first_seq: int) -> bytes:
    """The header of a segment whose first record has sequence number ``first_seq``."""
    body = _HEADER_BODY.pack(MAGIC, VERSION, 0, first_seq)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_record(seq: int, payload: bytes) -> bytes:
    """One framed record."""
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_RECORD_CRC_INPUT.pack(length, seq)))
    return _RECORD.pack(length, crc, seq) + payload


def _header_first_seq(data: bytes) -> int | None:
    """The first sequence number from a valid header, None if the header is damaged."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, _flags, first_seq, crc = _HEADER.unpack_from(data)
    if magic != MAGIC or zlib.crc32(data[: _HEADER_BODY.size]) != crc:
        return None
    if version not in _READ_VERSIONS:
        raise JournalVersionError(
            f"journal segment format version {version} is not supported (this writebehind reads "
            f"version {VERSION}); it was written by a newer writebehind"
        )
    return int(first_seq)


_INCOMPLETE = -1
_BAD = -2


def _record_at(data: bytes, off: int, after: int) -> tuple[int, int]:
    """(seq, end offset) of a valid record at ``off`` with seq > ``after``; or (_INCOMPLETE, 0)
    when a plausible record runs past the end of the data; or (_BAD, 0)."""
    n = len(data)
    if off + RECORD_OVERHEAD > n:
        return _INCOMPLETE, 0
    length, crc, seq = _RECORD.unpack_from(data, off)
    if length > MAX_PAYLOAD or (seq <= after and seq != META_SEQ):
        return _BAD, 0
    end = off + RECORD_OVERHEAD + length
    if end > n:
        return _INCOMPLETE, 0
    body = memoryview(data)[off + RECORD_OVERHEAD : end]
    if zlib.crc32(body, zlib.crc32(_RECORD_CRC_INPUT.pack(length, seq))) != crc:
        return _BAD, 0
    return seq, end


def _resync(data: bytes, start: int, after: int) -> int | None:
    """The offset of the next valid record from ``start`` on, or None."""
    for off in range(start, len(data) - RECORD_OVERHEAD + 1):
        seq, _end = _record_at(data, off, after)
        if seq >= 0:
            return off
    return None


@dataclass
class _Scan:
    records: list[tuple[int, int, int]]  # (seq, start, end)
    damaged: list[tuple[int, int]]  # (start, end) byte ranges, header included
    torn_tail: int | None  # the offset of an incomplete last record


def _scan(data: bytes, after: int) -> _Scan:
    """Every valid record of one segment's bytes, and the damaged ranges between them."""
    records: list[tuple[int, int, int]] = []
    damaged: list[tuple[int, int]] = []
    torn: int | None = None
    if _header_first_seq(data) is None:
        damaged.append((0, min(HEADER_SIZE, len(data))))
    off = HEADER_SIZE
    last = after
    while off < len(data):
        seq, end = _record_at(data, off, last)
        if seq >= 0:
            records.append((seq, off, end))
            last = max(last, seq)
            off = end
            continue
        nxt = _resync(data, off + 1, last)
        if nxt is None:
            if seq == _INCOMPLETE:
                torn = off
            else:
                damaged.append((off, len(data)))
            break
        damaged.append((off, nxt))
        off = nxt
    # A damaged header followed by nothing is one damaged range, not a header plus a tail.
    return _Scan(records, damaged, torn)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(number: int) -> str:
    return f"{number:010d}{_SUFFIX}"


def _segments(directory: Path) -> list[tuple[int, Path]]:
    """(number, path) of the segment files, in write order: by the first sequence number each
    holds (its header's, or its first valid record's if the header is damaged), so that
    segments renamed out of order are still read in order; by name where that is unknown."""
    found: list[tuple[int, int, Path]] = []
    for path in directory.iterdir():
        if path.suffix == _SUFFIX and path.stem.isdigit():
            number = int(path.stem)
            found.append((_first_seq(path, number), number, path))
    found.sort()
    return [(number, path) for _first, number, path in found]


def _first_seq(path: Path, number: int) -> int:
    try:
        with open(path, "rb") as f:
            first = _header_first_seq(f.read(HEADER_SIZE))
        if first is None:
            scan = _scan(path.read_bytes(), 0)
            first = next((seq for seq, _s, _e in scan.records if seq != META_SEQ), None)
    except OSError:
        first = None  # unreadable: the reader sets it aside in its turn
    except JournalVersionError:
        first = None  # the reader raises it in its turn
    # Unknown: in name order, before any known one (segment numbers start at 1 as
    # sequence numbers do, and a segment never holds fewer records than its number minus 1).
    return number if first is None else first


class SegmentReader:
    """Reads one instance directory's records in sequence order, repairing as it goes.

    The caller must hold the directory's lock (an :class:`Orphan`, or its own
    :class:`SegmentWriter` closed). A torn record at the end of the last segment is cut off; any
    other damage (a bad CRC, a bad header, a record that does not parse) is set aside: the
    segment's original bytes are kept as ``<segment>.corrupt``, the segment is rewritten with
    its valid records only, the damage is counted in :attr:`stats` and logged with what was
    lost, and reading goes on. It never raises for corruption; it raises
    :class:`JournalVersionError` for a segment written by a newer format, and ``OSError`` for
    I/O errors.
    """

    def __init__(self, directory: str | os.PathLike[str], *, repair: bool = True) -> None:
        self.directory = Path(directory)
        self.repair = repair
        self.stats = ReadStats()

    def records(self, after: int = 0) -> Iterator[Record]:
        """Yield the records with seq > ``after``, each sequence number once, in order, and
        the meta records (seq 0) where they stand, each copy of them."""
        segments = _segments(self.directory)
        newest = max((number for number, _path in segments), default=0)
        last = after
        for index, (number, path) in enumerate(segments):
            is_last = index == len(segments) - 1
            try:
                data = path.read_bytes()
            except OSError as error:  # a directory or a loop where a segment was: set aside
                self._unreadable(path, error)
                continue
            if len(data) < HEADER_SIZE and (not data or number == newest):
                # Killed between creating a new segment and writing its header: nothing was
                # appended to it. Empty, it holds no sequence number to sort it by, so it may
                # be read before segments written earlier: wherever it is, it lost nothing.
                self.stats.truncated_bytes += len(data)
                if self.repair:
                    path.unlink()
                continue
            scan = _scan(data, 0)
            self._settle(path, data, scan, is_last)
            for seq, start, end in scan.records:
                if seq == META_SEQ:  # a description of the records after it: each copy
                    yield Record(seq, data[start + RECORD_OVERHEAD : end])
                    continue
                if seq <= last:
                    continue  # released, skipped by the caller, or rewritten after a failed sync
                # Sequence numbers are contiguous: a gap after a known one is records lost.
                if seq > last + 1 and last > 0:
                    self._lost(path, last, seq)
                last = seq
                self.stats.records += 1
                yield Record(seq, data[start + RECORD_OVERHEAD : end])

    def _unreadable(self, path: Path, error: OSError) -> None:
        self.stats.corrupt_regions += 1
        aside = path.with_name(path.name + ".corrupt")
        logger.error(
            "journal %s: cannot be read (%s); set aside as %s, reading goes on (the reader "
            "counts the sequence numbers lost)",
            path,
            error,
            aside.name,
        )
        if self.repair:
            try:
                os.replace(path, aside)
            except OSError:
                logger.exception("journal %s: could not be set aside", path)
            else:
                self.stats.set_aside.append(aside)

    def _lost(self, path: Path, last: int, seq: int) -> None:
        self.stats.lost_sequences += seq - last - 1
        logger.error(
            "journal %s: records %d to %d are missing (set aside or never written whole); "
            "reading goes on at %d",
            path.parent,
            last + 1,
            seq - 1,
            seq,
        )

    def _settle(self, path: Path, data: bytes, scan: _Scan, is_last: bool) -> None:
        damaged = list(scan.damaged)
        if scan.torn_tail is not None and not is_last:
            # Only the segment being written when the process died can end mid-record.
            damaged.append((scan.torn_tail, len(data)))
        elif scan.torn_tail is not None:
            cut = len(data) - scan.torn_tail
            self.stats.truncated_bytes += cut
            logger.warning(
                "journal %s: cut off %d bytes of a record torn at the end (never acknowledged)",
                path,
                cut,
            )
            if self.repair and not damaged:
                with open(path, "r+b") as f:
                    f.truncate(scan.torn_tail)
                    os.fsync(f.fileno())
        if not damaged:
            return
        lost = sum(end - start for start, end in damaged)
        self.stats.corrupt_regions += len(damaged)
        self.stats.corrupt_bytes += lost
        seqs = [seq for seq, _s, _e in scan.records if seq != META_SEQ]
        logger.error(
            "journal %s: %d damaged bytes in %d places (at offsets %s) set aside as %s; "
            "%d valid records kept (sequence %s); the reader counts the sequence numbers lost",
            path,
            lost,
            len(damaged),
            ", ".join(str(start) for start, _end in damaged),
            path.name + ".corrupt",
            len(seqs),
            f"{seqs[0]} to {seqs[-1]}" if seqs else "none",
        )
        if not self.repair:
            return
        corrupt = path.with_name(path.name + ".corrupt")
        tmp = path.with_name(path.name + ".tmp")
        first = seqs[0] if seqs else 0
        good = b"".join(data[start:end] for _seq, start, end in scan.records)
        with open(tmp, "wb") as f:
            f.write(encode_header(first) + good)
            f.flush()
            os.fsync(f.fileno())
        # Keep the original bytes under a second name before the repaired file replaces them:
        # a crash at any point leaves either the original or the repaired segment in place.
        with contextlib.suppress(FileNotFoundError):
            corrupt.unlink()
        os.link(path, corrupt)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        self.stats.set_aside.append(corrupt)


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
        fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
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
    parent.mkdir(parents=True, exist_ok=True)
    name = name or instance_name()
    # Built under a hidden name and locked before it is renamed into view: take_over() never
    # sees an instance that is not locked yet.
    staging = parent / f".{name}.new"
    staging.mkdir()
    fd = -1
    try:
        fd = os.open(staging / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
            if kept.exists() and not kept.is_dir():  # something else took the name
                kept = directory.parent / f".corrupt-{secrets.token_hex(4)}"
            kept.mkdir(exist_ok=True)
            os.replace(path, kept / f"{directory.name}.{path.name}")
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
        lock = _try_lock(path)
        if lock is not None:
            orphans.append(Orphan(lock))
    return orphans


@dataclass
class _Segment:
    number: int
    path: Path
    first_seq: int
    last_seq: int
    size: int


def _check_sync(sync: str) -> SyncMode:
    if sync == "process":
        return "process"
    if sync == "interval":
        return "interval"
    if sync == "always":
        return "always"
    raise ValueError(f"sync: expected 'process', 'interval' or 'always', got {sync!r}")


class SegmentWriter:
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
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
