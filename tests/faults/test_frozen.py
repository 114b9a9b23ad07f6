"""A server that stops answering (its processes stopped with SIGSTOP) at the unlucky moment: after
the pool's connection sat idle long enough to be checked before its next use, or through
PgBouncer paused. Every wait is cut within ``write_timeout`` plus the watchdog's grace, counted
as a failed attempt, logged and retried; ``put()`` never waits."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from benchmarks.pgbouncer import running_pgbouncer
from tests.conftest import PrivateServer, create, pgbouncer_missing, require, wait_until
from tests.faults.conftest import (
    Failures,
    Producers,
    assert_accounted,
    table_rows,
    tagged,
)
from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.postgres.pools import _CHECK_AFTER_IDLE

pytestmark = pytest.mark.fault

WRITE_TIMEOUT = 1.0
GRACE = min(5.0, WRITE_TIMEOUT)  # the watchdog's: it cuts a wait this long after write_timeout


def idle_spell() -> None:
    """Let the pool's connection sit idle past the age at which it is checked before use: the
    fault under test needs time to pass, nothing to wait for."""
    time.sleep(_CHECK_AFTER_IDLE + 0.5)


@contextmanager
def frozen(*pids: int) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_a_backend_frozen_after_an_idle_spell_is_cut_and_the_write_retried(
    dsn: str, db: psycopg.Connection[Any], rows_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    conninfo, application = tagged(dsn, "idle-freeze")
    wb = WriteBehindQueue(
        PostgresUpsert(conninfo, rows_table, "k", write_timeout=WRITE_TIMEOUT),
        registry=None,
        name="idle-freeze",
        flush_interval=0.05,
        retry_backoff=0.05,
    )
    try:
        wb.put({"k": 0, "v": 0})
        assert wb.flush(timeout=30)
        (pid,) = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()  # type: ignore[misc]
        idle_spell()
        with caplog.at_level(logging.WARNING, logger="writebehind"), frozen(pid):
            frozen_at = time.monotonic()
            wb.put({"k": 1, "v": 1})
            assert wait_until(lambda: wb.metrics().total_retries >= 1, timeout=30)
            first_retry = time.monotonic() - frozen_at
            assert wb.flush(timeout=30)  # on a new connection: the frozen one was cut
            written = time.monotonic() - frozen_at
        m = wb.metrics()
    finally:
        wb.close(timeout=30)
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    print(f"frozen after an idle spell: first retry {first_retry:.2f}s, written {written:.2f}s")
    assert first_retry <= WRITE_TIMEOUT + GRACE + 1.0, first_retry
    assert table_rows(db, rows_table) == {0: {"k": 0, "v": 0}, 1: {"k": 1, "v": 1}}
    assert (m.total_persisted, m.total_failed) == (2, 0)
    failed = [r for r in caplog.records if "write of 1 rows failed" in r.getMessage()]
    assert failed and "idle-freeze" in failed[0].getMessage(), [
        r.getMessage() for r in caplog.records
    ]


def server_processes(server: PrivateServer) -> list[int]:
    """The postmaster of ``server`` and every process it started."""
    postmaster = int((Path(server.folder) / "postmaster.pid").read_text().split()[0])
    children = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and _parent_of(int(pid)) == postmaster
    ]
    return [postmaster, *children]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.timeout(180)
def test_a_frozen_server_is_an_outage_the_retry_budget_counts_and_put_never_waits(
    private_server: PrivateServer,
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "k bigint PRIMARY KEY, v integer NOT NULL")
    failures = Failures()
    budget = 6.0
    wb = WriteBehindQueue(
        PostgresUpsert(
            private_server.dsn,
            "items",
            "k",
            write_timeout=WRITE_TIMEOUT,
            connect_timeout=1.0,
        ),
        registry=None,
        max_retry_time=budget,
        on_failure=failures,
        flush_interval=0.05,
    )
    try:
        wb.put({"k": 0, "v": 0})
        assert wb.flush(timeout=30)
        idle_spell()
        processes = server_processes(private_server)
        with frozen(*processes):
            frozen_at = time.monotonic()
            slowest = 0.0
            for key in range(1, 501):
                started = time.monotonic()
                wb.put_nowait({"k": key, "v": key})
                slowest = max(slowest, time.monotonic() - started)
            assert wb.flush(timeout=60)  # every row given up: nothing waits for the server
            given_up_after = time.monotonic() - frozen_at
            m = wb.metrics()
        wb.put({"k": 1000, "v": 1})
        assert wb.flush(timeout=60)
    finally:
        wb.close(timeout=30)
    print(
        f"frozen server: slowest put() {slowest * 1000:.1f} ms, rows given up after "
        f"{given_up_after:.1f}s ({m.total_retries} retries)"
    )
    assert slowest < 0.5, slowest
    assert sorted(row["k"] for row in failures.rows()) == list(range(1, 501))
    assert all(isinstance(error, psycopg.OperationalError) for error in failures.errors())
    # max_retry_time counted from the first failure, which comes within write_timeout + grace.
    assert budget <= given_up_after <= WRITE_TIMEOUT + GRACE + budget + 5.0, given_up_after
    assert m.total_retries >= 2
    with psycopg.connect(private_server.dsn) as db:
        assert set(table_rows(db, "items")) == {0, 1000}


@pytest.fixture
def private_bouncer(dsn: str) -> Iterator[str]:
    require(pgbouncer_missing())
    with running_pgbouncer(dsn) as conninfo:
        yield conninfo


def admin(conninfo: str, command: str) -> None:
    """Run a PgBouncer admin console command (the ``pgbouncer`` database)."""
    with psycopg.connect(make_conninfo(conninfo, dbname="pgbouncer"), autocommit=True) as conn:
        conn.execute(command)


def test_a_paused_pgbouncer_is_an_outage_cut_within_write_timeout(
    private_bouncer: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    failures = Failures()
    wb = WriteBehindQueue(
        PostgresUpsert(private_bouncer, rows_table, "k", write_timeout=WRITE_TIMEOUT),
        registry=None,
        on_failure=failures,
        flush_interval=0.05,
        retry_backoff=0.05,
    )
    try:
        wb.put({"k": 0, "v": 0})
        assert wb.flush(timeout=30)
        admin(private_bouncer, "PAUSE")
        try:
            paused_at = time.monotonic()
            wb.put({"k": 1, "v": 1})
            assert wait_until(lambda: wb.metrics().total_retries >= 2, timeout=30)
            two_retries = time.monotonic() - paused_at
            assert not wb.flush(timeout=0.1)  # still paused: not written, not given up
        finally:
            admin(private_bouncer, "RESUME")
        assert wb.flush(timeout=30)
        m = wb.metrics()
    finally:
        wb.close(timeout=30)
    print(f"PgBouncer PAUSE: two failed attempts within {two_retries:.1f}s")
    assert two_retries <= 2 * (WRITE_TIMEOUT + GRACE) + 1.0, two_retries
    assert failures.rows() == []
    assert (m.total_persisted, m.total_failed) == (2, 0)
    assert set(table_rows(db, rows_table)) == {0, 1}


@pytest.mark.timeout(300)
def test_pgbouncer_reconnect_pause_and_resume_under_a_stream_lose_no_row(
    private_bouncer: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    failures = Failures()
    wb = WriteBehindQueue(
        PostgresUpsert(private_bouncer, rows_table, "k", write_timeout=WRITE_TIMEOUT),
        registry=None,
        batch_size=200,
        flush_interval=0.05,
        max_retry_time=None,  # rides out every pause: each row must reach the table
        retry_backoff=0.05,
        retry_backoff_max=0.5,
        on_failure=failures,
    )
    commands: list[str] = []

    def operator() -> None:
        # RECONNECT closes each server connection once it is released; PAUSE holds clients
        # past write_timeout; RESUME lets them go. Three rounds, while rows stream.
        for _ in range(3):
            for command, hold in (("RECONNECT", 0.5), ("PAUSE", 2.5), ("RESUME", 1.0)):
                admin(private_bouncer, command)
                commands.append(command)
                time.sleep(hold)  # how long the operator's state lasts: the fault itself

    thread = threading.Thread(target=operator, name="pgbouncer-operator")
    try:
        with Producers(wb, rows=None, pace=0.01) as producers:
            thread.start()
            thread.join(60)
            written_before = wb.metrics().total_persisted
            assert wait_until(lambda: wb.metrics().total_persisted > written_before + 100)
        assert wb.flush(timeout=60)
        m = wb.metrics()
    finally:
        if thread.is_alive():
            thread.join(60)
        with suppress(psycopg.errors.ProtocolViolation):  # "not paused": it ended resumed
            admin(private_bouncer, "RESUME")
        wb.close(timeout=30)
    failed: list[Mapping[str, Any]] = failures.rows()
    assert_accounted(m, producers.accepted, table_rows(db, rows_table), failed=failed)
    assert failed == []
    assert commands.count("PAUSE") == 3 and m.total_retries >= 3, (commands, m)
    print(
        f"PgBouncer RECONNECT, PAUSE and RESUME 3 times under a stream: {m.total_enqueued} rows, "
        f"{m.total_retries} retries, 0 lost"
    )


def test_opening_through_a_paused_pgbouncer_is_cut_within_write_timeout(
    private_bouncer: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    # PgBouncer logs the client in itself, then holds its first query: the catalog read.
    admin(private_bouncer, "PAUSE")
    try:
        sink = PostgresUpsert(private_bouncer, rows_table, "k", write_timeout=WRITE_TIMEOUT)
        wb = WriteBehindQueue(sink, registry=None)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            wb.start()
        refused_after = time.monotonic() - started
        started = time.monotonic()
        wb.put({"k": 1, "v": 1})  # accepted unchecked: the database cannot answer now
        put_took = time.monotonic() - started
    finally:
        admin(private_bouncer, "RESUME")
    try:
        assert wb.flush(timeout=30)
    finally:
        wb.close(timeout=30)
    print(f"open through a paused PgBouncer: cut after {refused_after:.1f}s, put() {put_took:.1f}s")
    assert refused_after <= WRITE_TIMEOUT + GRACE + 2.0, refused_after
    assert put_took <= sink.connect_timeout + 1.5, put_took
    assert set(table_rows(db, rows_table)) == {1}
