"""A RowBuffer's producers' side: rows appended to their lanes (recorded in the journal first,
with one), waiting for room, combined into a waiting row of their key; replayed rows fed."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from .._sink import Deletion
from ..errors import QueueClosed, QueueFull
from ..journal.progress import Done
from .batch import Entry, new_entry
from .lanes import INTAKE, BufferState, Lane

__all__ = ["Putting", "Record", "RecordOne"]

Record = Callable[[list[bytes], list[int]], "list[Done] | None"]
RecordOne = Callable[[bytes, int], "Done | None"]
"""Appends payloads to the journal for rows going to the given lanes, under the buffer's lock:
returns each row's record, or None when the journal has no room."""


class Putting(BufferState):
    """The producers' side of a RowBuffer."""

    def put(self, entry: Entry, block: bool = True, timeout: float | None = None) -> None:
        """Append ``entry``, waiting for room if ``block``. Raise QueueFull or QueueClosed."""
        # lane_of and _append, inlined for the common case: this is put()'s path.
        lanes = self.lanes
        if not entry[1]:
            lane = self.intake
        elif len(lanes) == 1:
            lane = lanes[0]
        else:
            lane = lanes[hash(entry[0]) % len(lanes)]
        with self.mutex:
            if self.closed:
                raise QueueClosed("the queue is closed")
            if self.combine is not None and self._combined(lane, entry):
                return
            if self.count + self.held >= self.maxsize:
                deadline = None if timeout is None else time.monotonic() + timeout
                self._wait_for_room(1, block, deadline)
                if self.combine is not None and self._combined(lane, entry):
                    return  # its key came in while this producer waited
            if self.combine is not None or lane is self.intake:
                self._append(lane, entry)
                return
            rows = lane.rows
            rows.append(entry)
            lane.put_count += 1
            self.put_count += 1
            self.count += 1
            if self._keep is None:
                self._keep = self.owner()
            size = len(rows)
            if size == 1 or size == self.batch_size:
                lane.not_empty.notify()

    def put_all(
        self, entries: list[Entry], block: bool = True, timeout: float | None = None
    ) -> None:
        """Append every one of ``entries`` at once, or none: wait for room for all of them if
        ``block`` (at most ``timeout`` seconds), else QueueFull; QueueClosed once closed.
        ValueError if they could never fit (more than ``maxsize``)."""
        count = len(entries)
        if count > self.maxsize:
            raise ValueError(f"{count} rows can never fit in a queue of maxsize {self.maxsize}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.mutex:
            if self.closed:
                raise QueueClosed("the queue is closed")
            self._wait_for_room(self._room_for(entries), block, deadline)
            self._append_all(entries)

    def put_now(self, entries: list[Entry]) -> None:
        """Append ``entries`` at once, even beyond ``maxsize`` (for a writer, which frees room
        and must never wait for it). QueueClosed once closed."""
        with self.mutex:
            if self.closed:
                raise QueueClosed("the queue is closed")
            self._append_all(entries)

    def put_recorded(
        self,
        entries: list[Entry],
        payloads: list[bytes],
        record: Record,
        wait_room: Callable[[float], None],
        block: bool = True,
        timeout: float | None = None,
        beyond_maxsize: bool = False,
    ) -> None:
        """put_all(), the rows appended to the journal by ``record`` under the lock, so that
        the journal's order is the buffer's. When the journal is full, wait for its room with
        ``wait_room(seconds)`` outside the lock, as for the buffer's (QueueFull past
        ``timeout``, or at once if not ``block``). ``beyond_maxsize``: no wait for the buffer's
        room (a writer's thread)."""
        count = len(entries)
        if count > self.maxsize and not beyond_maxsize:
            raise ValueError(f"{count} rows can never fit in a queue of maxsize {self.maxsize}")
        lanes = [self.lane_index(entry) for entry in entries]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.mutex:
                if self.closed:
                    raise QueueClosed("the queue is closed")
                if not beyond_maxsize:
                    self._wait_for_room(self._room_for(entries), block, deadline)
                marks = record(payloads, lanes)
                if marks is not None:
                    self._append_all(
                        [
                            new_entry((*e[:5], (m,), None, e[7]))
                            for e, m in zip(entries, marks, strict=True)
                        ]
                    )
                    return
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise QueueFull("the journal is full (max_bytes, or the disk)")
            wait_room(1.0 if remaining is None else min(1.0, remaining))

    def put_recorded_one(
        self,
        entry: Entry,
        payload: bytes,
        lane: int,
        record: RecordOne,
        wait_room: Callable[[float], None],
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """put_recorded() of one row going to ``lane``, on put()'s path."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.mutex:
                if self.closed:
                    raise QueueClosed("the queue is closed")
                if self.count + self.held >= self.maxsize:
                    self._wait_for_room(1, block, deadline)
                mark = record(payload, lane)
                if mark is not None:
                    entry = new_entry(
                        (entry[0], entry[1], entry[2], entry[3], entry[4], (mark,), None, 0)
                    )
                    target = self.intake if lane < 0 else self.lanes[lane]
                    if self.combine is None or not self._combined(target, entry):
                        self._append(target, entry)
                    return
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise QueueFull("the journal is full (max_bytes, or the disk)")
            wait_room(1.0 if remaining is None else min(1.0, remaining))

    def _room_for(self, entries: list[Entry]) -> int:
        # Under the mutex: the room ``entries`` take; with ``combine``, a row whose key waits
        # is combined into its row and takes none (but a put after a delete: a row of its own).
        if self.combine is None:
            return len(entries)
        needed = 0
        newest: dict[Hashable, bool] = {}  # key -> whether its newest write here deletes
        for entry in entries:
            if not entry.params:
                needed += 1
                continue
            deleting = type(entry.params) is Deletion
            if entry.key in newest:
                held: bool | None = newest[entry.key]
            else:
                cell = self.lane_of(entry.key, entry.params).waiting.get(entry.key)
                held = None if cell is None else type(cell[0].params) is Deletion
            if held is None or (held and not deleting):
                needed += 1
            newest[entry.key] = deleting
        return needed

    def _wait_for_room(self, count: int, block: bool, deadline: float | None) -> None:
        # Under the mutex: return once ``count`` more rows fit; QueueFull at once if not
        # ``block``, or past ``deadline``; QueueClosed if the queue closes meanwhile.
        while self.count + self.held + count > self.maxsize:
            remaining = None if deadline is None else deadline - time.monotonic()
            if not block or (remaining is not None and remaining <= 0):
                if count == 1:
                    raise QueueFull(f"the queue is full ({self.maxsize} rows)")
                raise QueueFull(f"no room for {count} rows ({self.maxsize} rows at most)")
            self.not_full.wait(remaining)
            if self.closed:
                raise QueueClosed("the queue was closed while waiting for room")

    def lane_index(self, entry: Entry) -> int:
        """The lane ``entry`` goes to: its key's, or INTAKE while its key is unknown."""
        if not entry.params:
            return INTAKE
        lanes = len(self.lanes)
        return 0 if lanes == 1 else hash(entry.key) % lanes

    def feed_replay(self, entries: list[Entry], backlog: int, timeout: float) -> bool:
        """Append replayed rows once fewer than ``backlog`` wait in the replay lane (at most
        ``timeout`` seconds); False if there was no room in time. Beyond ``maxsize``: live rows
        fill the rest, and wait behind these."""
        deadline = time.monotonic() + timeout
        with self.mutex:
            # Also once closed: close() drains the replay before the rows put since.
            while len(self.replay.rows) >= backlog:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.replay_taken.wait(remaining)
            lane = self.replay
            if not self.deletes and Deletion in {type(entry.params) for entry in entries}:
                self.deletes = True
            lane.rows.extend(entries)
            lane.put_count += len(entries)
            self.put_count += len(entries)
            self.count += len(entries)
            if self._keep is None:
                self._keep = self.owner()
            self.lanes[0].not_empty.notify()
            return True

    def start_replay(self) -> None:
        """Hold every lane but the replay lane until end_replay() and its rows are written."""
        with self.mutex:
            self.replaying = True

    def end_replay(self) -> None:
        """No more replayed rows: the last ones are due at once, then the lanes go on."""
        with self.mutex:
            self.replaying = False
            self.replay.flush_upto = self.replay.put_count
            for lane in self.lanes:
                lane.not_empty.notify_all()

    def _append_all(self, entries: list[Entry]) -> None:
        # Under the mutex.
        for entry in entries:
            lane = self.lane_of(entry.key, entry.params)
            if self.combine is None or not self._combined(lane, entry):
                self._append(lane, entry)

    def _append(self, lane: Lane, entry: Entry) -> None:
        # Under the mutex. Wakes the lane's writer if the row makes a batch, or is the first.
        if self.combine is not None and entry.params:
            cell = [entry]
            lane.waiting[entry.key] = cell
            lane.rows.append(cell)
        else:
            lane.rows.append(entry)
        lane.put_count += 1
        self.put_count += 1
        self.count += 1
        if self._keep is None:
            self._keep = self.owner()
        size = len(lane.rows)
        if size == 1 or size == self.batch_size:
            if lane is self.intake:
                self.lanes[0].not_empty.notify()
            else:
                lane.not_empty.notify()

    def _combined(self, lane: Lane, entry: Entry) -> bool:
        # Under the mutex: combine ``entry`` into its key's waiting row, if there is one.
        cell = lane.waiting.get(entry.key) if entry.params else None
        if cell is None:
            return False
        if type(cell[0].params) is Deletion and type(entry.params) is not Deletion:
            return False  # a put after a delete is written after it: a cell of its own
        assert self.combine is not None
        cell[0] = self.combine(cell[0], entry)
        lane.put_count += 1
        self.put_count += 1
        return True
