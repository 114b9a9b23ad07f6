"""A sink that keeps its table in memory, for tests of the queue's logic."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import psycopg.errors

from writebehind import Params
from writebehind._sink import ProgressMark
from writebehind.errors import ProgressConflict

POISON = "poison"


class FakeSink:
    """Rows are ``{"id": ..., "value": ...}``; a row whose value is POISON is refused like a
    CHECK constraint would, failing the whole write. ``failures`` are raised by the next writes.
    ``gate``, when set, makes each write wait until it is opened."""

    name = "fake"

    def __init__(self) -> None:
        self.table: dict[Any, Any] = {}
        self.writes: list[list[Params]] = []
        self.attempts = 0
        self.failures: deque[BaseException | None] = deque()
        """Outcomes of the next writes: an error to raise, or None to let that write through."""
        self.gate: threading.Event | None = None
        self.write_started = threading.Event()
        self.opened = 0
        self.closed = 0
        self.changed = threading.Condition()
        self.violations: list[str] = []
        """Broken promises seen by write(), checked by the test's fixture when it ends."""

    def open(self) -> None:
        self.opened += 1

    def prepare(self, row: Mapping[str, Any]) -> tuple[Hashable, Params]:
        if not isinstance(row, Mapping):
            raise TypeError("row must be a Mapping")
        if set(row) != {"id", "value"}:
            raise ValueError(f"bad columns {sorted(row)}")
        return row["id"], (row["id"], row["value"])

    def write(self, rows: Sequence[Params]) -> None:
        if self.closed:
            raise RuntimeError("write after close")  # as a closed pool refuses connections
        self.attempts += 1
        self.write_started.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test gate never opened"
        failure = self.failures.popleft() if self.failures else None
        if failure is not None:
            raise failure
        if any(value == POISON for _, value in rows):
            raise psycopg.errors.CheckViolation("value is poison")
        keys = [key for key, _ in rows]
        if len(set(keys)) != len(keys):
            # Not an assert: raised here, on the worker thread, it would become a retry.
            self.violations.append(f"a write held a key twice: {keys}")
        with self.changed:
            self.writes.append(list(rows))
            self.table.update(rows)
            self.changed.notify_all()

    def close(self) -> None:
        self.closed += 1

    def rows_written(self) -> int:
        return sum(len(rows) for rows in self.writes)

    def wait_for_rows(self, count: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.rows_written() >= count, timeout)


def row(key: Any, value: Any = "v") -> dict[str, Any]:
    """A row of the fake sink's table."""
    return {"id": key, "value": value}


class ProgressSink(FakeSink):
    """A FakeSink that records the journal's progress with each write, in the same step and on
    the same conditions as PostgresUpsert does in the write's transaction; ``progress`` is its
    progress table, ``owners`` who owns each row."""

    def __init__(self) -> None:
        super().__init__()
        self.records_progress = False
        self.progress: dict[str, tuple[int, frozenset[int]]] = {}
        self.owners: dict[str, str] = {}
        self.applied: list[Params] = []
        """Every row applied, in order: a row written twice shows twice."""

    def track_progress(self) -> None:
        self.records_progress = True

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        rows = list(rows)
        with self.changed:
            for mark in progress:
                found = self.progress.get(mark.source)
                now = None if found is None else (found[0], tuple(sorted(found[1])))
                owner = self.owners.get(mark.source, mark.owner)
                if now != mark.expected or owner != mark.owner:
                    raise ProgressConflict(f"{mark.source}: {now} by {owner}, not {mark}")
        super().write(rows)
        with self.changed:
            self.applied.extend(rows)
            for mark in progress:
                self.progress[mark.source] = (mark.applied_seq, frozenset(mark.applied_extra))
                self.owners[mark.source] = mark.owner

    def claim_progress(
        self, prefix: str, sources: Sequence[str], owner: str
    ) -> dict[str, tuple[int, frozenset[int]]]:
        with self.changed:
            for source in sources:
                self.progress.setdefault(source, (0, frozenset()))
            for source in self.progress:
                if source.startswith(prefix):
                    self.owners[source] = owner
        return self.read_progress(prefix)

    def read_progress(self, prefix: str) -> dict[str, tuple[int, frozenset[int]]]:
        return {s: p for s, p in self.progress.items() if s.startswith(prefix)}

    def forget_progress(self, prefix: str) -> int:
        gone = [s for s in self.progress if s.startswith(prefix)]
        for source in gone:
            del self.progress[source]
            self.owners.pop(source, None)
        return len(gone)
