"""The server goes away under a stream of rows: stopped and started again, backends killed."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
import pytest

from tests.conftest import PrivateServer, create, wait_until
from tests.faults.conftest import Producers, assert_accounted, backends, table_rows, tagged
from writebehind import PostgresUpsert, WriteBehindQueue

pytestmark = pytest.mark.fault


def test_a_server_stopped_and_started_while_producers_put_loses_no_row(
    private_server: PrivateServer,
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "k bigint PRIMARY KEY, v integer NOT NULL CHECK (v >= 0)")
    wb = WriteBehindQueue(
        PostgresUpsert(private_server.dsn, "items", "k", connect_timeout=1.0),
        registry=None,
        batch_size=200,
        flush_interval=0.05,
        max_retry_time=None,  # rides out any outage: every row must reach the table
        retry_backoff=0.05,
        retry_backoff_max=0.5,
    )

    def persisted() -> int:
        return wb.metrics().total_persisted

    try:
        with Producers(wb, rows=None, pace=0.005) as producers:
            assert wait_until(lambda: persisted() >= 1000)
            private_server.stop()
            down_at = producers.count
            # The outage lasts while 1,000 more rows are accepted (room: maxsize 10,000).
            assert wait_until(lambda: producers.count >= down_at + 1000)
            assert wait_until(lambda: wb.metrics().total_retries >= 3)
            written_while_down = persisted()
            private_server.start()
            up_at = producers.count
            assert wait_until(lambda: persisted() >= written_while_down + 3000)
            assert producers.count > up_at  # still putting once it is back
        assert wb.flush(timeout=60)
        m = wb.metrics()
    finally:
        private_server.start()  # (already running, unless the test failed during the outage)
        wb.close(timeout=30)
    with psycopg.connect(private_server.dsn) as db:
        table = table_rows(db, "items")
    assert_accounted(m, producers.accepted, table)
    assert m.total_retries >= 3


def test_backends_killed_in_a_loop_while_rows_stream_lose_no_row(
    dsn: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    conninfo, application = tagged(dsn, "kill")
    wb = WriteBehindQueue(
        PostgresUpsert(conninfo, rows_table, "k"),
        registry=None,
        batch_size=200,
        flush_interval=0.05,
        max_retry_time=60.0,
        retry_backoff=0.01,
        retry_backoff_max=0.2,
    )
    done = threading.Event()
    rng = random.Random(9)
    kills = 0

    def killer() -> None:
        # Every 20 to 150 ms, whatever the writer is doing (opening, writing, committing,
        # waiting to retry), until the last row is written.
        nonlocal kills
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not done.wait(rng.uniform(0.02, 0.15)):
                killed = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    (application,),
                ).fetchone()
                kills += killed[0] if killed else 0

    assassin = threading.Thread(target=killer, name="killer")
    assassin.start()
    try:
        with Producers(wb, rows=5000, pace=0.005) as producers:  # a stream of a few seconds
            producers.join()
        assert wb.flush(timeout=60)
        done.set()
        m = wb.metrics()
    finally:
        done.set()
        assassin.join(30)
        wb.close(timeout=30)
    assert_accounted(m, producers.accepted, table_rows(db, rows_table))
    assert kills >= 5 and m.total_retries >= 1, (kills, m)
    assert wait_until(lambda: backends(db, application) == 0)  # close() let the pool go
