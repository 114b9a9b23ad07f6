"""Reading an instance directory back: its records in sequence order, each once, with a torn
tail cut off and any other damage set aside (the original bytes kept as ``<segment>.corrupt``,
the segment rewritten with its valid records), counted and logged."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .framing import HEADER_SIZE, META_SEQ, RECORD_OVERHEAD, _Scan, _scan, encode_header
from .private import open_private, read_private
from .segment_files import _fsync_dir, _segments

__all__ = ["ReadStats", "Record", "SegmentReader"]

logger = logging.getLogger("writebehind.journal")


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
                data = read_private(path)
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
                with os.fdopen(open_private(path, os.O_RDWR), "r+b") as f:
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
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
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
