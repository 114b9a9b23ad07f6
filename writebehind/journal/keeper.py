"""A queue's journal in one process: the records of the rows it accepts, and what is done of them.

Each accepted row is one record: a short header (its kind, the lane the row went to, and the
layout of its values) and the codec's payload. The lane names the record's source, the unit of
progress (one writer writes a lane, in order). Segments are released once every record in them
is done.

Records describe themselves. A converted row's values follow a *layout* (the sink's
``RowLayout``: table, column names, types, key), numbered in the journal and kept as a meta
record of its own, ahead of the rows in every segment that holds them: a process that replays
the journal maps the values by name, whatever its own ``columns=`` and the table's column order.
A row accepted before the sink could read its catalog is kept with its column names.

Kinds: 0, converted values without a layout (a sink that has none, and journals of 0.2); 1, a
row as put (names and values); 2, converted values of a layout; 3, a layout (a meta record);
4, a delete (the key columns' names and values, as given: a replay maps them by name).
"""

from __future__ import annotations

import errno
import logging
import struct
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from .._sink import Deletion, Params, RowLayout
from . import codec
from .options import Journal
from .private import check_journal_folders, read_private, write_private
from .progress import Done, ProgressTracker
from .segments import SegmentWriter, instance_name

__all__ = [
    "INTAKE_LANE",
    "QueueJournal",
    "Replayed",
    "decode_layout",
    "decode_record",
    "lane_name",
    "lane_of",
    "lanes_of",
]

logger = logging.getLogger("writebehind.journal")

INTAKE_LANE = 0xFFFF
"""The lane number recorded for a row accepted before the sink could convert it."""

_HEADER = struct.Struct("<BH")
_LAID_OUT_HEADER = struct.Struct("<BHH")  # kind, lane, layout number
_CONVERTED = 0  # key and params, as prepare() made them, in a layout the record does not say
_UNCHECKED = 1  # the row as put(): column names and values, converted when it is written
_LAID_OUT = 2  # key and params, as prepare() made them, of the layout numbered in the header
_LAYOUT = 3  # a layout: its number, then (table, columns, types, key)
_DELETE = 4  # a delete: the key columns' names and values (as put), made params when written


class Replayed:
    """One record read back: its lane, and the key and params (or the row, if unchecked), and
    the number of the layout of the params (0: none said)."""

    __slots__ = ("deleted", "key", "lane", "layout", "params", "row")

    def __init__(
        self,
        lane: int,
        key: Hashable,
        params: Params,
        row: Mapping[str, Any] | None,
        layout: int = 0,
        deleted: bool = False,
    ) -> None:
        self.lane = lane
        self.key = key
        self.params = params
        self.row = row
        self.layout = layout
        self.deleted = deleted
        """A delete: ``row`` is its key columns by name."""


def encode_record(
    lane: int, key: Hashable, params: Params, row: Mapping[str, Any], layout: int = 0
) -> bytes:
    """The record of a row going to ``lane``, its params of the layout numbered ``layout``
    (0: none); TypeError for a value the journal cannot hold."""
    try:
        if type(params) is Deletion:  # by name: a replay maps it to the key as it is then
            names = tuple(row)
            return _HEADER.pack(_DELETE, lane if params else INTAKE_LANE) + codec.encode(
                None, (names, tuple(row[name] for name in names))
            )
        if params and layout:
            return _LAID_OUT_HEADER.pack(_LAID_OUT, lane, layout) + codec.encode(key, params)
        if params:
            return _HEADER.pack(_CONVERTED, lane) + codec.encode(key, params)
        names = tuple(row)
        return _HEADER.pack(_UNCHECKED, INTAKE_LANE) + codec.encode(
            None, (names, tuple(row[name] for name in names))
        )
    except TypeError as error:
        raise TypeError(f"row cannot be kept in the journal: {error}") from None


def lane_of(payload: bytes) -> int:
    """The lane of a record, read without decoding the row (replay skips records already
    written by their lane's progress); ValueError for one too short to say."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"journal record of {len(payload)} bytes is too short")
    return int(_HEADER.unpack_from(payload)[1])


def decode_record(payload: bytes) -> Replayed:
    """The row of a record; ValueError for one that cannot be read."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"journal record of {len(payload)} bytes is too short")
    kind, lane = _HEADER.unpack_from(payload)
    if kind == _LAID_OUT:
        if len(payload) < _LAID_OUT_HEADER.size:
            raise ValueError(f"journal record of {len(payload)} bytes is too short")
        layout = _LAID_OUT_HEADER.unpack_from(payload)[2]
        key, params = codec.decode(memoryview(payload)[_LAID_OUT_HEADER.size :])
        return Replayed(lane, key, params, None, layout)
    key, params = codec.decode(memoryview(payload)[_HEADER.size :])
    if kind == _CONVERTED:
        return Replayed(lane, key, params, None)
    if kind in (_UNCHECKED, _DELETE) and len(params) == 2:
        names, values = params
        if isinstance(names, tuple) and isinstance(values, tuple) and len(names) == len(values):
            row = dict(zip(names, values, strict=True))
            return Replayed(lane, None, (), row, deleted=kind == _DELETE)
    raise ValueError(f"journal record of unknown kind {kind}")


def encode_layout(number: int, layout: RowLayout) -> bytes:
    """The meta record saying what the params of layout ``number`` are."""
    return _HEADER.pack(_LAYOUT, number) + codec.encode(None, tuple(layout))


def decode_layout(payload: bytes) -> tuple[int, RowLayout]:
    """The number and the layout a meta record holds; ValueError for one that is not."""
    if len(payload) < _HEADER.size:
        raise ValueError(f"journal meta record of {len(payload)} bytes is too short")
    kind, number = _HEADER.unpack_from(payload)
    if kind != _LAYOUT or not number:
        raise ValueError(f"journal meta record of unknown kind {kind}")
    _key, fields = codec.decode(memoryview(payload)[_HEADER.size :])
    if len(fields) != 4 or not isinstance(fields[0], str):
        raise ValueError("journal layout record is not (table, columns, types, key)")
    table, columns, types, key = fields
    for names in (columns, types, key):
        if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)):
            raise ValueError("journal layout record is not (table, columns, types, key)")
    if len(columns) != len(types):
        raise ValueError("journal layout record has as many types as columns")
    return number, RowLayout(table, columns, types, key)


_LANES_FILE = "lanes"
_FULL_DISK_RETRY = 0.05  # seconds between attempts to make the journal on a full disk
_MOST_LANES = 64  # claimed when a journal does not say (killed before it could)


def lanes_of(directory: Path) -> list[str]:
    """The lane names of the journal in ``directory``: "intake" and one per writer."""
    try:
        lanes = int(read_private(directory / _LANES_FILE).decode())
    except (OSError, ValueError):
        lanes = _MOST_LANES
    return [lane_name(INTAKE_LANE), *map(lane_name, range(lanes))]


def lane_name(lane: int) -> str:
    """How a source names a lane: its number, or "intake" for rows accepted unchecked."""
    return "intake" if lane < 0 or lane == INTAKE_LANE else str(lane)


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
        self.instance = instance_name()
        self.prefix = f"{queue}/{self.instance}/"
        self.path = options.root / queue / self.instance
        check_journal_folders(options.root, queue)  # PermissionError: others could reach it
        self.tracker = ProgressTracker(owner=self.prefix)
        self._lanes = lanes
        self._sources = [self.prefix + lane_name(lane) for lane in range(lanes)]
        self._intake = self.prefix + lane_name(INTAKE_LANE)
        # Made with the first record, not before: a process started on a full disk replays
        # the journals of dead ones (which frees it) before it needs room of its own.
        self._writer: SegmentWriter | None = None
        self._layouts: dict[RowLayout, int] = {}
        self._metas: list[bytes] = []
        self._layout_lock = threading.Lock()  # numbers a layout, or makes the writer
        self._said_full = False
        self._said_stuck = False  # a release failed, and was logged

    def _open(self) -> SegmentWriter | None:
        """The segment files, made now if they are not yet; None while the disk is full."""
        if self._writer is not None:
            return self._writer
        options = self.options
        assert options.segment_bytes is not None  # chosen by Journal when not given
        with self._layout_lock:
            return self._writer or self._make(options)

    def _make(self, options: Journal) -> SegmentWriter | None:
        assert options.segment_bytes is not None
        try:
            writer = SegmentWriter(
                options.root,
                self.queue,
                sync=options.sync,
                sync_interval=options.sync_interval,
                segment_bytes=options.segment_bytes,
                max_bytes=options.max_bytes,
                name=self.instance,
            )
            # Its lanes, for the process that replays it to claim each one's progress.
            write_private(writer.path / _LANES_FILE, f"{self._lanes}\n".encode())
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                if not self._said_full:
                    self._said_full = True
                    logger.warning("journal %s: the disk is full; put() waits", self.path)
                return None
            if error.errno is None:  # a folder refused (PermissionError): it says it all
                raise
            raise type(error)(
                error.errno,
                f"queue {self.queue!r} cannot open its journal under {options.root}: "
                f"{error.strerror}",
                error.filename,
            ) from None
        for meta in self._metas:  # layouts numbered before the first record
            writer.describe(meta)
        self._writer = writer
        return writer

    def layout_number(self, layout: RowLayout) -> int:
        """The number records of ``layout`` carry (from 1), kept in the journal with it from
        now on: before any record that carries it."""
        with self._layout_lock:
            number = self._layouts.get(layout)
            if number is None:
                number = len(self._layouts) + 1
                if number > 0xFFFF:
                    raise ValueError("a journal holds at most 65535 layouts")
                meta = encode_layout(number, layout)
                if self._writer is not None:
                    self._writer.describe(meta)
                self._metas.append(meta)
                self._layouts[layout] = number
            return number

    @property
    def disk_bytes(self) -> int:
        """The size of this process's segment files."""
        writer = self._writer
        return 0 if writer is None else writer.disk_bytes

    def source(self, lane: int) -> str:
        """The source of this process's records of ``lane`` (negative: the intake)."""
        return self._intake if lane < 0 else self._sources[lane]

    def record(self, payloads: list[bytes], lanes: list[int]) -> list[Done] | None:
        """Append the records of rows going to ``lanes``; None when there is no room.

        Called under the buffer's lock, which orders every append with the tracking of its
        records: a record is tracked before any later one is appended, so a release never
        counts a record appended and not yet tracked as done, but for the newest, whose
        segment is the one being written, never released."""
        writer = self._open()
        seqs = None if writer is None else writer.append_nowait(payloads)
        if seqs is None:
            return None
        done = [Done(self.source(lane), seq) for lane, seq in zip(lanes, seqs, strict=True)]
        self.tracker.accepted_all(done)
        return done

    def record_one(self, payload: bytes, lane: int) -> Done | None:
        """:meth:`record` of one row, on put()'s path."""
        writer = self._writer or self._open()
        seq = None if writer is None else writer.append_one_nowait(payload)
        if seq is None:
            return None
        done = _done((self._intake if lane < 0 else self._sources[lane], seq))
        self.tracker.accepted(done)
        return done

    def wait_room(self, payload_bytes: int, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for room in the journal."""
        writer = self._writer
        if writer is None:  # not made yet: the disk was full, try again in a while
            time.sleep(min(timeout, _FULL_DISK_RETRY))
        else:
            writer.wait_room(payload_bytes, timeout)

    def sync(self) -> None:
        """For ``sync="always"``: return once every record appended so far is on disk."""
        writer = self._writer
        if writer is not None:
            writer.sync_upto(writer.last_seq)

    def settle(self, done: Iterable[Done]) -> None:
        """``done`` are committed or handed over: release what no record needs any more.
        Never raises: a segment that cannot be deleted stays (the error is logged once), and
        the rows are done all the same."""
        self.tracker.settle(done)
        writer = self._writer
        if writer is None:
            return
        last = writer.last_seq  # read first: records appended since are not released
        try:
            writer.release_upto(self.tracker.floor([*self._sources, self._intake], last))
        except OSError as error:
            if not self._said_stuck:
                self._said_stuck = True
                logger.error(
                    "journal %s: written segments cannot be deleted (%s); they stay on disk, "
                    "count towards max_bytes, and are deleted once they can be",
                    self.path,
                    error,
                )
        else:
            self._said_stuck = False

    def all_done(self) -> bool:
        """Whether every record of this process is done."""
        return not self.tracker.pending(self.prefix)

    def close(self) -> bool:
        """Close the journal; its directory is removed if every record is done (returns True
        then), else kept for the next process to replay."""
        writer = self._writer
        done = self.all_done()
        if writer is None:
            return done
        try:
            writer.close(remove=done)
        except OSError:
            logger.exception("journal %s: closing failed", self.path)
            return False
        return done

    def forget_after_fork(self) -> None:
        """In a forked child: let the parent's journal be, without unlocking it."""
        if self._writer is not None:
            self._writer.forget_after_fork()
