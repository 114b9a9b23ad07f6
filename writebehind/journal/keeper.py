"""A queue's journal in one process: the records of the rows it accepts, and what is done of them.

Each accepted row is one record: a short header (the lane the row went to, whether it was
converted) and the codec's payload. The lane names the record's source, the unit of progress
(one writer writes a lane, in order). Segments are released once every record in them is done.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .._sink import Params
from . import codec
from .options import Journal
from .progress import Done, ProgressTracker
from .segments import SegmentWriter

__all__ = ["INTAKE_LANE", "QueueJournal", "Replayed", "decode_record"]

logger = logging.getLogger("writebehind.journal")

INTAKE_LANE = 0xFFFF
"""The lane number recorded for a row accepted before the sink could convert it."""

_HEADER = struct.Struct("<BH")
_CONVERTED = 0  # key and params, as prepare() made them
_UNCHECKED = 1  # the row as put(): column names and values, converted when it is written


class Replayed:
    """One record read back: its lane, and the key and params (or the row, if unchecked)."""

    __slots__ = ("key", "lane", "params", "row")

    def __init__(
        self, lane: int, key: Hashable, params: Params, row: Mapping[str, Any] | None
    ) -> None:
        self.lane = lane
        self.key = key
        self.params = params
        self.row = row


def encode_record(lane: int, key: Hashable, params: Params, row: Mapping[str, Any]) -> bytes:
    """The record of a row going to ``lane``; TypeError for a value the journal cannot hold."""
    try:
        if params:
            return _HEADER.pack(_CONVERTED, lane) + codec.encode(key, params)
        names = tuple(row)
        return _HEADER.pack(_UNCHECKED, INTAKE_LANE) + codec.encode(
            None, (names, tuple(row[name] for name in names))
        )
    except TypeError as error:
        raise TypeError(f"row cannot be kept in the journal: {error}") from None


def decode_record(payload: bytes) -> Replayed:
    """The row of a record; ValueError for one that cannot be read."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"journal record of {len(payload)} bytes is too short")
    kind, lane = _HEADER.unpack_from(payload)
    key, params = codec.decode(memoryview(payload)[_HEADER.size :])
    if kind == _CONVERTED:
        return Replayed(lane, key, params, None)
    if kind == _UNCHECKED and len(params) == 2:
        names, values = params
        if isinstance(names, tuple) and isinstance(values, tuple) and len(names) == len(values):
            return Replayed(lane, None, (), dict(zip(names, values, strict=True)))
    raise ValueError(f"journal record of unknown kind {kind}")


_LANES_FILE = "lanes"
_MOST_LANES = 64  # claimed when a journal does not say (killed before it could)


def lanes_of(directory: Path) -> list[str]:
    """The lane names of the journal in ``directory``: "intake" and one per writer."""
    try:
        lanes = int((directory / _LANES_FILE).read_text())
    except (OSError, ValueError):
        lanes = _MOST_LANES
    return ["intake", *map(str, range(lanes))]


_done: Callable[[tuple[str, int]], Done] = partial(tuple.__new__, Done)


class QueueJournal:
    """This process's journal of one queue: ``<path>/<queue>/<instance>/``.

    Its sources are named ``<queue>/<instance>/<lane>``. The buffer calls :meth:`record` under its
    lock, so the journal's order is the buffer's; the writers call :meth:`settle` once rows are
    done, which releases the segments every record of which is done.
    """

    def __init__(self, options: Journal, queue: str, lanes: int) -> None:
        self.options = options
        self.queue = queue
        self.writer = SegmentWriter(
            options.root,
            queue,
            sync=options.sync,
            sync_interval=options.sync_interval,
            segment_bytes=options.segment_bytes,
            max_bytes=options.max_bytes,
        )
        self.instance = self.writer.path.name
        self.prefix = f"{queue}/{self.instance}/"
        self.tracker = ProgressTracker(owner=self.prefix)
        # Its lanes, for the process that replays it to claim each one's progress.
        (self.writer.path / _LANES_FILE).write_text(f"{lanes}\n")
        self._sources = [f"{self.prefix}{lane}" for lane in range(lanes)]
        self._intake = f"{self.prefix}intake"

    @property
    def disk_bytes(self) -> int:
        """The size of this process's segment files."""
        return self.writer.disk_bytes

    def source(self, lane: int) -> str:
        """The source of this process's records of ``lane`` (negative: the intake)."""
        return self._intake if lane < 0 else self._sources[lane]

    def record(self, payloads: list[bytes], lanes: list[int]) -> list[Done] | None:
        """Append the records of rows going to ``lanes``; None when there is no room.

        Called under the buffer's lock, which orders every append with the tracking of its
        records: a record is tracked before any later one is appended, so a release never
        counts a record appended and not yet tracked as done, but for the newest, whose
        segment is the one being written, never released."""
        seqs = self.writer.append_nowait(payloads)
        if seqs is None:
            return None
        done = [Done(self.source(lane), seq) for lane, seq in zip(lanes, seqs, strict=True)]
        self.tracker.accepted_all(done)
        return done

    def record_one(self, payload: bytes, lane: int) -> Done | None:
        """:meth:`record` of one row, on put()'s path."""
        seq = self.writer.append_one_nowait(payload)
        if seq is None:
            return None
        done = _done((self._intake if lane < 0 else self._sources[lane], seq))
        self.tracker.accepted(done)
        return done

    def wait_room(self, payload_bytes: int, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for room in the journal."""
        self.writer.wait_room(payload_bytes, timeout)

    def sync(self) -> None:
        """For ``sync="always"``: return once every record appended so far is on disk."""
        self.writer.sync_upto(self.writer.last_seq)

    def settle(self, done: Iterable[Done]) -> None:
        """``done`` are committed or handed over: release what no record needs any more."""
        self.tracker.settle(done)
        last = self.writer.last_seq  # read first: records appended since are not released
        floor = self.tracker.floor([*self._sources, self._intake], last)
        self.writer.release_upto(floor)

    def all_done(self) -> bool:
        """Whether every record of this process is done."""
        return not self.tracker.pending(self.prefix)

    def close(self) -> bool:
        """Close the journal; its directory is removed if every record is done (returns True
        then), else kept for the next process to replay."""
        done = self.all_done()
        try:
            self.writer.close(remove=done)
        except OSError:
            logger.exception("journal %s: closing failed", self.writer.path)
            return False
        return done

    def forget_after_fork(self) -> None:
        """In a forked child: let the parent's journal be, without unlocking it."""
        self.writer.forget_after_fork()


def payload_bytes(payloads: Sequence[bytes]) -> int:
    """The bytes ``payloads`` take in the journal, framing aside."""
    return sum(len(payload) for payload in payloads)
