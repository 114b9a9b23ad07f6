"""Every write is bounded in time, and outages are ridden out as the README says, on PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import psycopg
import psycopg.errors as pe
import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import PrivateServer, create, named, select, wait_until
from writebehind import PostgresUpsert, WriteBehindQueue

Failure = tuple[list[Mapping[str, Any]], BaseException]


def test_a_write_stuck_behind_a_lock_runs_out_is_retried_then_given_up(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v int")
    failures: list[Failure] = []
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table_name, "id", write_timeout=0.5),
        registry=None,
        max_retry_time=3.0,
        on_failure=lambda rows, error: failures.append((rows, error)),
    )
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", table_name))
        started = time.monotonic()
        wb.put({"id": 1, "v": 1})
        assert wb.flush(timeout=30)
        given_up_after = time.monotonic() - started
        locker.rollback()
    assert 3.0 <= given_up_after < 3.0 + 0.5 + 2.0
    assert [rows for rows, _ in failures] == [[{"id": 1, "v": 1}]]
    assert isinstance(failures[0][1], pe.QueryCanceled)  # cancelled at write_timeout
    assert wb.metrics().total_retries >= 2
    wb.put({"id": 2, "v": 2})  # the lock is gone: writing goes on
    wb.close()  # no timeout given, and it returns
    assert select(db, table_name) == [(2, 2)]


def test_a_server_process_that_stops_answering_has_its_connection_cut(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v int")
    application = f"wb-frozen-{os.getpid()}"
    sink = PostgresUpsert(
        make_conninfo(dsn, application_name=application), table_name, "id", write_timeout=1.0
    )
    wb = WriteBehindQueue(sink, registry=None, retry_backoff_max=0.1)
    wb.put({"id": 1, "v": 1})
    assert wb.flush(timeout=30)
    (pid,) = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
    ).fetchone()  # type: ignore[misc]
    os.kill(pid, signal.SIGSTOP)  # neither statement_timeout nor keepalives can end a wait now
    try:
        started = time.monotonic()
        wb.put({"id": 2, "v": 2})
        assert wb.flush(timeout=30)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wb.close()
    assert took < 1.0 + 1.0 + 3.0, f"the write took {took:.1f}s"
    assert select(db, table_name) == [(1, 1), (2, 2)]
    assert wb.metrics().total_retries >= 1


@pytest.mark.timeout(180)
def test_writing_resumes_within_seconds_of_the_server_coming_back(
    private_server: PrivateServer, request: pytest.FixtureRequest
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "id int PRIMARY KEY, v int")
    wb = WriteBehindQueue(
        PostgresUpsert(private_server.dsn, "items", "id"), registry=None, flush_interval=0.05
    )
    with wb:
        wb.put({"id": 0, "v": 0})
        assert wb.flush(timeout=30)
        private_server.stop()
        stopped = time.monotonic()
        for i in range(1, 101):
            wb.put({"id": i, "v": i})
        # The outage lasts until the backoff has reached its cap (the default 2 s, from 0.1 s
        # doubling: the 6th retry) and waited at it twice, and past the pool's own
        # reconnect_timeout (connect_timeout, 5 s); --soak holds it for 30 s.
        assert wait_until(lambda: wb.metrics().total_retries >= 8, timeout=60)
        outage = 30.0 if request.config.getoption("--soak") else 5.0 + 1.0
        time.sleep(max(0.0, stopped + outage - time.monotonic()))
        private_server.start()
        back = time.monotonic()
        assert wb.flush(timeout=60)
        resumed_after = time.monotonic() - back
        m = wb.metrics()
    assert resumed_after < 3.0, f"writing resumed {resumed_after:.2f}s after the server returned"
    assert (m.total_persisted, m.total_failed) == (101, 0)


class SteppedClock:
    """The monotonic clock, which the test can move forward: a queue given it lives through
    minutes of its retry budget in seconds, its backoff and connection attempts still real."""

    def __init__(self) -> None:
        self._offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self._offset

    def move_to(self, when: float) -> None:
        """Read ``when`` from now on (never earlier than now: the clock is monotonic)."""
        self._offset += max(0.0, when - self())


def test_with_the_defaults_a_minute_is_ridden_out_and_rows_are_given_up_after_two(
    private_server: PrivateServer,
) -> None:
    """As the test below, on a clock that skips the waits: the retry budget is counted on the
    queue's clock, which is moved on while the queue keeps retrying a stopped server."""
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "id int PRIMARY KEY, v int")
    clock = SteppedClock()
    failures: list[tuple[float, list[Mapping[str, Any]], BaseException]] = []
    wb = WriteBehindQueue(
        PostgresUpsert(private_server.dsn, "items", "id"),
        registry=None,
        on_failure=lambda rows, error: failures.append((clock(), rows, error)),
        clock=clock,
    )

    def retried(times: int) -> bool:
        """Whether the queue retries ``times`` more times (it is still riding the outage)."""
        target = wb.metrics().total_retries + times
        return wait_until(lambda: wb.metrics().total_retries >= target, timeout=30)

    with wb:
        wb.put({"id": 0, "v": 0})
        assert wb.flush(timeout=30)
        private_server.stop()
        stopped = clock()
        for i in range(1, 1501):  # three default batches
            wb.put({"id": i, "v": i})
        assert retried(1)
        clock.move_to(stopped + 70)
        assert retried(2)  # a minute later the queue retries, and nothing is given up
        assert failures == [] and wb.pending_rows() == 1500
        clock.move_to(stopped + 115)  # the rest of the two minutes runs out in real time
        assert wb.flush(timeout=60)
    given_up = [row["id"] for _, rows, _ in failures for row in rows]
    assert given_up == list(range(1, 1501))  # in put order
    first, last = failures[0][0] - stopped, failures[-1][0] - stopped
    # Default max_retry_time: 120 s from the first failure; later batches add one attempt each.
    assert 118 <= first <= 130, f"first rows given up after {first:.1f}s"
    assert last - first < 3 * 5 + 5, f"the last batch followed {last - first:.1f}s later"
    assert all(isinstance(error, psycopg.OperationalError) for _, _, error in failures)


@pytest.mark.soak
@pytest.mark.timeout(400)
def test_with_the_defaults_a_minute_is_ridden_out_in_real_time(
    private_server: PrivateServer,
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "id int PRIMARY KEY, v int")
    failures: list[tuple[float, list[Mapping[str, Any]], BaseException]] = []
    wb = WriteBehindQueue(
        PostgresUpsert(private_server.dsn, "items", "id"),
        registry=None,
        on_failure=lambda rows, error: failures.append((time.monotonic(), rows, error)),
    )
    with wb:
        wb.put({"id": 0, "v": 0})
        assert wb.flush(timeout=30)
        private_server.stop()
        stopped = time.monotonic()
        for i in range(1, 1501):  # three default batches
            wb.put({"id": i, "v": i})
        assert not wb.flush(timeout=70)  # a minute later nothing is given up
        assert failures == [] and wb.pending_rows() == 1500
        assert wb.flush(timeout=120)
    given_up = [row["id"] for _, rows, _ in failures for row in rows]
    assert given_up == list(range(1, 1501))  # in put order
    first, last = failures[0][0] - stopped, failures[-1][0] - stopped
    # Default max_retry_time: 120 s from the first failure; later batches add one attempt each.
    assert 118 <= first <= 130, f"first rows given up after {first:.1f}s"
    assert last - first < 3 * 5 + 5, f"the last batch followed {last - first:.1f}s later"
    assert all(isinstance(error, psycopg.OperationalError) for _, _, error in failures)


@pytest.fixture
def many_queues_server(private_server: PrivateServer) -> PrivateServer:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        db.execute("ALTER SYSTEM SET max_connections = 20")
    private_server.stop()
    private_server.start()
    return private_server


def test_fifty_queues_share_a_few_connections_and_hold_none_when_idle(
    many_queues_server: PrivateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("writebehind.postgres.pools._MAX_IDLE", 0.5)
    dsn = make_conninfo(many_queues_server.dsn, application_name="wb-fifty")
    with psycopg.connect(many_queues_server.dsn, autocommit=True) as db:
        assert db.execute("SHOW max_connections").fetchone() == ("20",)
        for n in range(50):
            create(db, f"t{n}", "id int PRIMARY KEY, v int")
        queues = [
            WriteBehindQueue(PostgresUpsert(dsn, f"t{n}", "id"), registry=None, name=f"q{n}")
            for n in range(50)
        ]
        peak = 0

        def count() -> int:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wb-fifty'"
            return db.execute(query).fetchone()[0]  # type: ignore[index,no-any-return]

        def produce(queue: WriteBehindQueue) -> None:
            for i in range(200):
                queue.put({"id": i, "v": i})

        threads = [threading.Thread(target=produce, args=(q,)) for q in queues]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, count())
            time.sleep(0.01)
        assert all(queue.flush(timeout=60) for queue in queues)
        peak = max(peak, count())
        totals = [q.metrics() for q in queues]
        assert all((m.total_persisted, m.total_failed) == (200, 0) for m in totals)
        for n in range(50):
            assert db.execute(named("SELECT count(*) FROM {}", f"t{n}")).fetchone() == (200,)
        # Four connections for writing at most (the pool), plus the catalog reads at open.
        assert peak <= 4 + 4, f"{peak} connections for 50 queues"
        assert wait_until(lambda: count() == 0, timeout=30)  # idle: none held
        for queue in queues:
            queue.close()


def test_a_queue_nobody_references_closes_itself_once_drained(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v int")
    application = f"wb-forgotten-{os.getpid()}"
    sink = PostgresUpsert(make_conninfo(dsn, application_name=application), table_name, "id")
    wb = WriteBehindQueue(sink, registry=None, name="forgotten")
    for i in range(100):
        wb.put({"id": i, "v": i})
    collected = threading.Event()
    weakref.finalize(wb, collected.set)
    del wb  # the rows are not written yet: the worker holds the queue until they are
    assert wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "writebehind-forgotten"]
    )
    assert collected.is_set()
    assert len(select(db, table_name)) == 100
    assert sink._shared is None  # the pool let go: it closes with its last sink
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    assert wait_until(lambda: db.execute(query, (application,)).fetchone() == (0,))
