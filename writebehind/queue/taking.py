"""A RowBuffer's writers' side: batches taken from the lanes once due, their room given back once
written, flushes and the close."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from .batch import Entry
from .lanes import INTAKE, REPLAY, BufferState, Lane, entry_of

__all__ = ["Taking"]


class Taking(BufferState):
    """The writers' side of a RowBuffer."""

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
                wait = age_wait(entry_of(source.rows[0]))
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

    def _source(self, index: int) -> Lane | None:
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

    def _take(self, lane: Lane, intake: bool) -> list[Entry]:
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
            times = [entry_of(lane.rows[0]).enqueued_at for lane in self.lanes if lane.rows]
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
