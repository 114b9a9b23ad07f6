"""The bounded queue between producers and the writers."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from .._sink import Deletion
from ..errors import QueueClosed, QueueFull
from ..journal.progress import Done
from .batch import Entry, new_entry

__all__ = ["INTAKE", "REPLAY", "RowBuffer"]

INTAKE = -1
"""The lane of rows accepted before their key was known (the sink not open yet)."""
REPLAY = -2
"""The lane of rows replayed from the journals of dead processes: written before any other."""

Combine = Callable[[Entry, Entry], Entry]
Record = Callable[[list[bytes], list[int]], "list[Done] | None"]
RecordOne = Callable[[bytes, int], "Done | None"]
"""Appends payloads to the journal for rows going to the given lanes, under the buffer's lock:
returns each row's record, or None when the journal has no room."""


class _Lane:
    """The rows waiting for one writer, in put order."""

    __slots__ = ("flush_upto", "not_empty", "put_count", "rows", "taken_count", "waiting")

    def __init__(self, mutex: threading.Lock) -> None:
        self.rows: deque[Any] = deque()  # Entry, or a one-item list holding one (coalescing)
        self.not_empty = threading.Condition(mutex)
        self.put_count = 0  # accepted rows, replaced ones included
        self.taken_count = 0
        self.flush_upto = 0
        self.waiting: dict[Hashable, list[Entry]] = {}  # key -> its waiting cell (coalescing)


class RowBuffer:
    """Accepted rows, split by key into one lane per writer, under one lock and one bound.

    - ``maxsize`` bounds the rows waiting in every lane plus the rows writers have taken and
      the database has not read yet (``held``): producers refill the queue in short turns while
      a writer waits on the server, rather than in one long turn that keeps it from the GIL.
    - A key always goes to the same lane (its hash modulo the writers), so one writer writes
      it, in put order. Rows whose key is not known yet (accepted before the sink could read
      its catalog) wait in the intake lane: writer 0 checks them, and no lane is taken from
      while any wait or are being written, so that a later row of a key never overtakes them.
    - With ``combine``, a row whose key already waits (not yet taken) is combined into the
      waiting row in place and takes no room: a hot key is written once per batch.
    - Counts per lane grow under the lock with the insertion, so a flush knows exactly which
      rows came before it: the flush barrier needs no marker in the queue.
    - A writer is woken only when its batch may have become due (first row, a full batch,
      flush, close), not on every put.
    - ``put`` raises QueueClosed once closed, also to producers blocked on a full buffer, so
      that no row slips in behind a writer's last batch.
    """

    def __init__(
        self, maxsize: int, batch_size: int, lanes: int = 1, combine: Combine | None = None
    ) -> None:
        self.maxsize = maxsize
        self.batch_size = min(batch_size, maxsize)
        self.mutex = threading.Lock()
        self.not_full = threading.Condition(self.mutex)
        self.lanes = [_Lane(self.mutex) for _ in range(lanes)]
        self.intake = _Lane(self.mutex)
        self.intake_held = 0  # intake rows taken and not yet settled: the lanes wait for them
        self.replay = _Lane(self.mutex)
        self.replay_held = 0  # the same for replayed rows: every other lane waits for them
        self.replaying = False  # rows are still being read from dead processes' journals
        self.replay_taken = threading.Condition(self.mutex)
        self.combine = combine
        self.count = 0  # rows (or cells) waiting in every lane
        self.owner: Callable[[], object] = lambda: None
        """The queue, weakly: held strongly (``_keep``) while rows are in, so that a queue
        dropped with rows waiting lives until they are written."""
        self._keep: object = None
        self.held = 0
        self.put_count = 0
        self.closed = False
        self.deletes = False
        """Whether a delete was ever taken in: batches may then hold deletes (the Delivery
        looks for them only then)."""

    def lane_of(self, key: Hashable, params: tuple[Any, ...]) -> _Lane:
        """The lane of a row: the intake while its key is unknown, else its key's."""
        if not params:
            return self.intake
        lanes = self.lanes
        if len(lanes) == 1:
            return lanes[0]
        return lanes[hash(key) % len(lanes)]

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

    def _append(self, lane: _Lane, entry: Entry) -> None:
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

    def _combined(self, lane: _Lane, entry: Entry) -> bool:
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

    def wake(self) -> None:
        """Wake every writer to look at its state again."""
        with self.mutex:
            for lane in self.lanes:
                lane.not_empty.notify_all()

    def wait_for_rows(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for a row, a close or a wake() (writer 0, before
        the sink is open)."""
        lane = self.lanes[0]
        with self.mutex:
            if not self.count and not self.closed:
                lane.not_empty.wait(timeout)

    def wait_for_work(self, index: int, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for a row in lane ``index`` (writer 0: or in the
        intake), a flush, a close or a wake()."""
        lane = self.lanes[index]
        with self.mutex:
            first = index == 0 and (self.intake.rows or self.replay.rows)
            if not lane.rows and not first and not self.closed:
                lane.not_empty.wait(timeout)

    def qsize(self) -> int:
        """Rows (combined rows count once) waiting in every lane, not taken yet."""
        return self.count

    def waiting_in(self, index: int) -> int:
        """Rows waiting in lane ``index`` (writer 0 also answers for the intake and the
        replay, and counts one while rows are still being replayed)."""
        lane = self.lanes[index]
        with self.mutex:
            first = 0
            if index == 0:
                first = len(self.intake.rows) + len(self.replay.rows) + self.replaying
            return len(lane.rows) + first

    def take_now(self, index: int) -> tuple[list[Entry], int]:
        """Remove and return up to ``batch_size`` rows of lane ``index`` (writer 0: the intake
        first) at once, due or not, and the lane they came from (INTAKE or ``index``)."""
        with self.mutex:
            if index == 0 and self.replay.rows:
                return self._take(self.replay, True), REPLAY
            if index == 0 and self.intake.rows:
                return self._take(self.intake, True), INTAKE
            return self._take(self.lanes[index], False), index

    def take(
        self, index: int, age_wait: Callable[[Entry], float], idle_wait: float
    ) -> tuple[list[Entry], int]:
        """Remove and return up to ``batch_size`` rows for writer ``index`` once a batch is
        due, and the lane they came from (INTAKE or ``index``); they keep their room until
        released.

        Writer 0 takes the intake first; no writer takes from its lane while intake rows wait
        or are being written. A batch is due when ``batch_size`` rows wait, a flush or close
        asks for them, or ``age_wait(oldest row)`` (seconds the oldest may still wait) runs out.
        With nothing to take, return an empty list at once if closed, else after ``idle_wait``
        seconds at most.
        """
        lane = self.lanes[index]
        with self.mutex:
            source = self._source(index)
            if source is None:
                if self.closed and not self._first_lanes_busy():
                    return [], index
                lane.not_empty.wait(idle_wait)
                source = self._source(index)
                if source is None:
                    return [], index
            while not (
                len(source.rows) >= self.batch_size
                or self.closed
                or source.flush_upto > source.taken_count
                or (source is self.replay and self.replaying)
            ):
                wait = age_wait(_entry(source.rows[0]))
                if wait <= 0:
                    break
                lane.not_empty.wait(wait)
                source = self._source(index)
                if source is None:
                    return [], index
            if source is self.replay:
                return self._take(source, True), REPLAY
            intake = source is self.intake
            return self._take(source, intake), INTAKE if intake else index

    def _first_lanes_busy(self) -> bool:
        # Under the mutex: rows of the replay or intake lanes wait or are being written.
        return bool(
            self.replaying
            or self.replay.rows
            or self.replay_held
            or self.intake.rows
            or self.intake_held
        )

    def _source(self, index: int) -> _Lane | None:
        # Under the mutex: where writer ``index`` may take from now, if anywhere. Replayed
        # rows first, then rows accepted before the sink opened, then the lanes.
        if index == 0 and self.replay.rows:
            return self.replay
        if self.replaying or self.replay.rows or self.replay_held:
            return None
        if index == 0 and self.intake.rows:
            return self.intake
        if self.intake.rows or self.intake_held:
            return None
        lane = self.lanes[index]
        return lane if lane.rows else None

    def _take(self, lane: _Lane, intake: bool) -> list[Entry]:
        # Under the mutex.
        count = min(self.batch_size, len(lane.rows))
        if lane is self.replay and count:
            # One batch, one target: replayed rows of other columns go in batches of their own.
            target = lane.rows[0].target
            for index, entry in enumerate(itertools.islice(lane.rows, count)):
                if entry.target is not target:
                    count = index
                    break
        popleft = lane.rows.popleft
        if self.combine is not None and not intake:
            waiting = lane.waiting
            entries = []
            for _ in range(count):
                cell = popleft()
                entry = cell[0]
                if waiting.get(entry.key) is cell:  # else a put after a delete waits behind
                    del waiting[entry.key]
                entries.append(entry)
        else:
            entries = [popleft() for _ in range(count)]
        lane.taken_count += count
        self.count -= count
        self.held += count
        if lane is self.replay:
            self.replay_held += count
            self.replay_taken.notify_all()
        elif intake:
            self.intake_held += count
        return entries

    def settle_replay(self, count: int) -> None:
        """``count`` replayed rows taken are written or given up: let the lanes go on."""
        with self.mutex:
            self.replay_held -= count
            if not self.replay_held:
                for lane in self.lanes:
                    lane.not_empty.notify()

    def settle_intake(self, count: int) -> None:
        """``count`` intake rows taken are written or given up: let the lanes go on."""
        with self.mutex:
            self.intake_held -= count
            if not self.intake_held:
                for lane in self.lanes:
                    lane.not_empty.notify()

    def oldest_waiting(self) -> float | None:
        """When the oldest row still waiting (not taken) was put, by the queue's clock."""
        with self.mutex:
            times = [_entry(lane.rows[0]).enqueued_at for lane in self.lanes if lane.rows]
            for lane in (self.intake, self.replay):
                if lane.rows:
                    times.append(lane.rows[0].enqueued_at)
        return min(times, default=None)

    def close(self) -> None:
        """Refuse further puts and wake every waiter. Rows already in stay to be taken."""
        with self.mutex:
            self.closed = True
            self.not_full.notify_all()
            for lane in self.lanes:
                lane.not_empty.notify_all()

    def request_flush(self) -> tuple[int, ...]:
        """Make every row put so far due now; return how many rows each lane (the replay
        and intake lanes last) has accepted so far."""
        with self.mutex:
            for lane in (*self.lanes, self.replay, self.intake):
                lane.flush_upto = max(lane.flush_upto, lane.put_count)
            for lane in self.lanes:
                lane.not_empty.notify_all()
            return (
                *(lane.put_count for lane in self.lanes),
                self.replay.put_count,
                self.intake.put_count,
            )

    def release(self, count: int) -> None:
        """Give back the room of ``count`` taken rows to producers."""
        with self.mutex:
            self.held -= count
            if not self.held and not self.count:
                self._keep = None  # drained: the owner may be freed once nobody references it
            self.not_full.notify(count)


def _entry(item: Any) -> Entry:
    # A lane holds entries, or (coalescing) one-item cells holding one.
    return item[0] if isinstance(item, list) else item  # type: ignore[no-any-return]
