"""What the fault tests share: the accounting check, producer threads, a failure recorder."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from tests.conftest import create
from tests.faults.child import row
from writebehind import Metrics, QueueFull, WriteBehindQueue

Row = Mapping[str, Any]

KEY = "k"
"""The key column of every fault test's table; ``v`` is its value (``child.row``)."""


@pytest.fixture
def rows_table(db: psycopg.Connection[Any], table_name: str) -> str:
    """The table of the fault tests: a key, and a value that a CHECK and NOT NULL guard."""
    create(db, table_name, "k bigint PRIMARY KEY, v integer NOT NULL CHECK (v >= 0)")
    return table_name


def tagged(dsn: str, tag: str) -> tuple[str, str]:
    """``dsn`` with an application_name of the test's own, and that name: the test can find
    the queue's connections in pg_stat_activity, and its queue gets a pool of its own (pools
    are shared by conninfo), which no other test's pool depends on."""
    application = f"wb-fault-{tag}-{os.getpid()}"
    return make_conninfo(dsn, application_name=application), application


def backends(db: psycopg.Connection[Any], application: str) -> int:
    """Server processes of connections named ``application``."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    found = db.execute(query, (application,)).fetchone()
    assert found is not None
    return int(found[0])


def table_rows(db: psycopg.Connection[Any], table: str) -> dict[Any, Row]:
    """Every row of ``table`` (its ``k`` and ``v``), by key."""
    query = sql.SQL("SELECT k, v FROM {}").format(sql.Identifier(table))
    with db.cursor(row_factory=dict_row) as cur:
        return {found[KEY]: found for found in cur.execute(query)}


class Failures:
    """An ``on_failure`` that records the rows given up with their errors; with ``then_raise``,
    it raises that exception after recording them."""

    def __init__(self, then_raise: Callable[[], BaseException] | None = None) -> None:
        self.calls: list[tuple[list[Row], BaseException]] = []
        self._then_raise = then_raise
        self._lock = threading.Lock()

    def __call__(self, rows: list[Row], error: BaseException) -> None:
        with self._lock:
            self.calls.append((list(rows), error))
        if self._then_raise is not None:
            raise self._then_raise()

    def stop_raising(self) -> None:
        """From now on, only record (rows handed over later, at interpreter exit, say)."""
        self._then_raise = None

    def rows(self) -> list[Row]:
        """Every row handed over, in the order they came."""
        with self._lock:
            return [handed for rows, _ in self.calls for handed in rows]

    def errors(self) -> list[BaseException]:
        with self._lock:
            return [error for _, error in self.calls]


class Producers:
    """``threads`` threads putting rows into ``wb``, each of keys of its own (thread t puts
    keys t, t + threads, t + 2·threads, ...), ``rows`` rows each, or until stop() when ``rows``
    is None. With ``pace``, each thread rests ``pace`` seconds after every ``burst`` rows: a
    stream at a rate, rather than a queue kept full. A row counts as accepted once put() has
    returned; what is accepted is kept, by key. Used as a context manager: the threads start on
    entry and are stopped and joined on exit (a producer waiting for room gives up its row)."""

    def __init__(
        self,
        wb: WriteBehindQueue,
        *,
        rows: int | None,
        threads: int = 2,
        make_row: Callable[[int], Row] = row,
        pace: float | None = None,
        burst: int = 20,
    ) -> None:
        self._wb = wb
        self._rows = rows
        self._pace = pace
        self._burst = burst
        self._make_row = make_row
        self._stop = threading.Event()
        self._accepted: list[dict[Any, Row]] = [{} for _ in range(threads)]
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._produce, args=(t, threads), name=f"producer-{t}")
            for t in range(threads)
        ]

    def _produce(self, number: int, threads: int) -> None:
        accepted = self._accepted[number]
        key = number
        stop, pace, burst = self._stop, self._pace, self._burst
        try:
            while not stop.is_set() and (self._rows is None or len(accepted) < self._rows):
                new = self._make_row(key)
                while True:
                    try:
                        self._wb.put(new, timeout=0.2)
                        break
                    except QueueFull:  # waiting for room: the test may want to stop us
                        if stop.is_set():
                            return
                accepted[new[KEY]] = new
                key += threads
                if pace is not None and len(accepted) % burst == 0:
                    stop.wait(pace)
        except BaseException as error:  # reported by join()
            self._errors.append(error)

    def __enter__(self) -> Producers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.join()

    @property
    def count(self) -> int:
        """Rows accepted so far (read while the producers run)."""
        return sum(len(accepted) for accepted in self._accepted)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the producers to finish; raise what one of them raised."""
        for thread in self._threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in self._threads), "a producer is stuck"
        if self._errors:
            raise self._errors[0]

    @property
    def accepted(self) -> dict[Any, Row]:
        """Every row accepted, by key (call after join)."""
        return {key: new for accepted in self._accepted for key, new in accepted.items()}


class Counts(NamedTuple):
    """The counters of the accounting invariant."""

    enqueued: int
    persisted: int
    failed: int
    abandoned: int
    depth: int


def counts(metrics: Metrics | Mapping[str, Any]) -> Counts:
    """The counters of a Metrics snapshot, or of one a child process sent (a mapping of its
    fields)."""
    fields = dict(metrics) if isinstance(metrics, Mapping) else dataclasses.asdict(metrics)
    return Counts(
        enqueued=int(fields["total_enqueued"]),
        persisted=int(fields["total_persisted"]),
        failed=int(fields["total_failed"]),
        abandoned=int(fields["total_abandoned"]),
        depth=int(fields["current_queue_depth"]),
    )


def assert_accounted(
    metrics: Metrics | Mapping[str, Any],
    accepted: Mapping[Any, Row],
    table: Mapping[Any, Row],
    *,
    failed: Sequence[Row] = (),
    abandoned: Sequence[Row] = (),
    lost: Collection[Any] = (),
) -> Counts:
    """Every accepted row (by key: one put per key) is in exactly one place: in ``table`` at the
    value put, or handed to ``on_failure`` as put (``failed``: given up; ``abandoned``: with
    RowsAbandoned at the exit deadline), or among ``lost``, the keys of rows in the memory of a
    killed process. The table holds no other row. And the queue's counters add up:
    ``enqueued == persisted + failed + abandoned + depth``, each the number of rows found there.

    ``metrics`` is taken once the queue is done (depth 0), or, with ``lost``, by the killed
    process before it died: then the rows lost were among those it counted in its depth, and
    rows it counted persisted are in the table (which may hold more, written since)."""
    c = counts(metrics)
    assert c.enqueued == c.persisted + c.failed + c.abandoned + c.depth, c
    assert c.enqueued == len(accepted), (c, len(accepted))

    places: dict[Any, str] = {}

    def place(key: Any, where: str) -> None:
        assert key in accepted, f"key {key!r} is {where}, but it was never put"
        assert key not in places, f"key {key!r} is {places[key]} and {where}"
        places[key] = where

    for key, found in table.items():
        place(key, "in the table")
        assert dict(found) == dict(accepted[key]), f"table {found}, put {accepted[key]}"
    for where, rows in (("handed to on_failure", failed), ("abandoned", abandoned)):
        for handed in rows:
            place(handed[KEY], where)
            assert dict(handed) == dict(accepted[handed[KEY]]), (where, handed)
    for key in lost:
        place(key, "lost with its process")
    missing = sorted(set(accepted) - set(places))
    assert not missing, f"{len(missing)} accepted rows are nowhere, e.g. keys {missing[:10]}"

    assert (c.failed, c.abandoned) == (len(failed), len(abandoned)), c
    if lost:
        assert len(lost) <= c.depth, f"{len(lost)} rows lost, {c.depth} were in memory"
        assert c.persisted <= len(table), c
    else:
        assert (c.persisted, c.depth) == (len(table), 0), c
    return c
