"""Outages, killed connections, locks and exits, on a real PostgreSQL."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import create, named, select, wait_until
from writebehind import PostgresUpsert, QueueFull, WriteBehindQueue


def tagged_queue(
    dsn: str, table: str, key: str, tag: str, **options: Any
) -> tuple[str, WriteBehindQueue]:
    """A queue whose connections carry an application_name of their own, returned with it, so
    that the test can find them in pg_stat_activity."""
    application = f"wb-{tag}-{os.getpid()}"
    sink = PostgresUpsert(make_conninfo(dsn, application_name=application), table, key)
    return application, WriteBehindQueue(sink, registry=None, **options)


def test_killed_connections_keep_the_last_value_per_key(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "k int PRIMARY KEY, v int NOT NULL")
    application, wb = tagged_queue(
        dsn,
        table_name,
        "k",
        "kill",
        batch_size=100,
        max_retries=1000,
        retry_backoff=0.01,
        retry_backoff_max=0.2,
    )
    done = threading.Event()
    kills = 0
    last_kill_at = 0  # committed batches when a connection was last killed

    def killer() -> None:
        # Kills again only once the writer has committed more batches: on a slow machine a
        # fixed kill rate can outpace reconnecting, and then no writer can make progress.
        # It goes on until the last rows are written, so that the last values see faults too.
        nonlocal kills, last_kill_at
        with psycopg.connect(dsn, autocommit=True) as conn:
            killed_at = -1
            while not done.is_set():
                batches = wb.metrics().total_batches
                if batches >= killed_at + 3:
                    killed = conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = %s",
                        (application,),
                    ).fetchone()
                    if killed and killed[0]:
                        kills += killed[0]
                        last_kill_at = batches
                    killed_at = batches
                done.wait(0.005)  # polls the writer's progress

    assassin = threading.Thread(target=killer)
    assassin.start()
    last: dict[int, int] = {}
    try:
        with wb:
            for i in range(30_000):
                key = (i * 7919) % 300
                wb.put({"k": key, "v": i})
                last[key] = i
            assert wb.flush(timeout=60)
            done.set()
            m = wb.metrics()
    finally:
        done.set()
        assassin.join(30)
    assert kills > 0
    assert m.total_retries > 0
    assert last_kill_at >= m.total_batches - 10, (last_kill_at, m.total_batches)
    assert (m.total_persisted, m.total_failed) == (30_000, 0)
    assert dict(select(db, table_name)) == last


def test_a_locked_table_fills_the_queue_and_pushes_back(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    application, wb = tagged_queue(dsn, entries, "verikey", "lock", maxsize=20, batch_size=10)
    wb.start()  # opens the sink before the table is locked

    def worker_waits_on_lock() -> bool:
        waits = db.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s"
            " AND state = 'active'",
            (application,),
        ).fetchall()
        return waits == [("Lock",)]

    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", entries))
        for i in range(10):  # one batch, which the worker takes and gets stuck with
            wb.put({"verikey": f"k{i}", "n": i, "doc": None})
        assert wait_until(worker_waits_on_lock)
        accepted = 10
        with pytest.raises(QueueFull):
            while accepted < 1000:
                wb.put_nowait({"verikey": f"k{accepted}", "n": accepted, "doc": None})
                accepted += 1
        # maxsize bounds the rows waiting plus those of the stuck batch not yet sent.
        assert 20 <= accepted <= 30
        started = time.monotonic()
        with pytest.raises(QueueFull):
            wb.put({"verikey": "late", "n": 0, "doc": None}, timeout=0.2)
        assert time.monotonic() - started >= 0.2 - 0.01
        locker.rollback()
    assert wb.flush(timeout=30)
    wb.close()
    assert len(select(db, entries)) == accepted
    m = wb.metrics()
    assert (m.total_enqueued, m.total_persisted, m.total_failed, m.current_queue_depth) == (
        accepted,
        accepted,
        0,
        0,
    )


EXITING_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from prometheus_client import CollectorRegistry
    from writebehind import PostgresUpsert, WriteBehindQueue

    logging.basicConfig(level=logging.ERROR)
    dsn, table = sys.argv[1], sys.argv[2]
    rows, shutdown_timeout = int(sys.argv[3]), float(sys.argv[4])
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table, "verikey"),
        flush_interval=3600,
        batch_size=100_000,
        shutdown_timeout=shutdown_timeout,
        registry=CollectorRegistry(),
    )
    for i in range(rows):
        wb.put({"verikey": f"k{i}", "n": i, "doc": {"i": i}})
    print("put done", flush=True)
    # no close(): the exit hook must drain
    """
)


def run_exiting_script(dsn: str, table: str, rows: int, shutdown_timeout: float) -> Any:
    return subprocess.run(
        [sys.executable, "-c", EXITING_SCRIPT, dsn, table, str(rows), str(shutdown_timeout)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_process_that_exits_without_close_drains_its_queue(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    result = run_exiting_script(dsn, entries, 5000, 30.0)
    assert result.returncode == 0, result.stderr
    assert "put done" in result.stdout
    assert select(db, entries, "count(*), sum(n)") == [(5000, sum(range(5000)))]


def test_the_exit_drain_gives_up_after_shutdown_timeout_and_says_so(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN SHARE MODE", entries))  # readers fine, writers wait
        started = time.monotonic()
        result = run_exiting_script(dsn, entries, 50, 0.5)
        elapsed = time.monotonic() - started
        locker.rollback()
    assert result.returncode == 0, result.stderr
    assert "50 rows abandoned" in result.stderr
    assert elapsed < 60


def test_connections_killed_faster_than_the_backoff_do_not_stall_the_queue(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    # Kills every connection of the queue every 20-300 ms, whatever the writer does: a retry
    # after a backoff must not be spent on a connection that was killed while it waited.
    create(db, table_name, "k int PRIMARY KEY, v int NOT NULL")
    application, wb = tagged_queue(dsn, table_name, "k", "fastkill", max_retry_time=60.0)
    done = threading.Event()
    rng = random.Random(7)

    def killer() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not done.wait(rng.uniform(0.02, 0.3)):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (application,),
                )

    assassin = threading.Thread(target=killer)
    assassin.start()
    started = time.monotonic()
    try:
        with wb:
            for i in range(20_000):
                wb.put({"k": i % 5000, "v": i})
            assert wb.flush(timeout=60)
            m = wb.metrics()
    finally:
        done.set()
        assassin.join(30)
    took = time.monotonic() - started
    assert (m.total_persisted, m.total_failed) == (20_000, 0)
    assert dict(select(db, table_name)) == {k: 15_000 + k for k in range(5000)}
    assert took < 45, f"{took:.1f}s for 20,000 rows"


def test_a_connection_to_a_server_that_turned_read_only_is_dropped_for_a_new_one(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    # As a primary demoted to a standby in a failover: its connections refuse writes
    # (25006); the next attempt must connect again (where target_session_attrs finds the
    # new primary), not retry on the same connection for ever.
    role = f"wb_ro_{os.getpid()}"
    create(db, table_name, "id int PRIMARY KEY, v int")
    db.execute(named("CREATE ROLE {} LOGIN", role))
    try:
        db.execute(named("GRANT ALL ON {} TO {}", table_name, role))
        db.execute(named("ALTER ROLE {} SET default_transaction_read_only = on", role))
        sink = PostgresUpsert(make_conninfo(dsn, user=role), table_name, "id")
        with WriteBehindQueue(sink, registry=None, retry_backoff_max=0.1) as wb:
            wb.put({"id": 1, "v": 1})
            assert wait_until(lambda: wb.metrics().total_retries >= 2)
            db.execute(named("ALTER ROLE {} SET default_transaction_read_only = off", role))
            assert wb.flush(timeout=30)
        assert select(db, table_name) == [(1, 1)]
    finally:
        db.execute(named("DROP OWNED BY {}", role))
        db.execute(named("DROP ROLE {}", role))
