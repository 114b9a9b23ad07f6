"""A server restarted behind PgBouncer: while the server is down, PgBouncer's login to it fails,
and PgBouncer then refuses its clients for ``server_login_retry`` seconds (15 by default) even
once the server is back. The queue rides it out either way (rows accepted, 0 lost); the time
writes take to resume after the server is back is printed for the README's "PgBouncer"
section, which tells users to set ``server_login_retry = 1``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from benchmarks.pgbouncer import running_pgbouncer
from tests.conftest import PrivateServer, create, pgbouncer_missing, require, wait_until
from writebehind import PostgresUpsert, WriteBehindQueue

pytestmark = pytest.mark.fault

DOWN = 2.0  # long enough for PgBouncer to try the server, and fail, while it is down


def highest(server: PrivateServer) -> int:
    with psycopg.connect(server.dsn) as db:
        row = db.execute("SELECT coalesce(max(v), -1) FROM items").fetchone()
        assert row is not None
        return int(row[0])


@contextmanager
def producing(wb: WriteBehindQueue) -> Iterator[list[int]]:
    """A producer putting key ``v % 50`` with an increasing ``v`` every 5 ms; yields the list
    of values put so far."""
    put: list[int] = []
    stop = threading.Event()

    def run() -> None:
        v = 0
        while not stop.is_set():
            wb.put({"k": v % 50, "v": v})
            put.append(v)
            v += 1
            stop.wait(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield put
    finally:
        stop.set()
        thread.join(10)


def resume_after_restart(server: PrivateServer, settings: dict[str, str]) -> tuple[float, float]:
    """Seconds from the server being stopped, and from it being back, to the first write after
    it, through a PgBouncer with ``settings``; checks that every key holds its last value."""
    with psycopg.connect(server.dsn, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS items")
        create(db, "items", "k int PRIMARY KEY, v int NOT NULL")
    with running_pgbouncer(server.dsn, settings=settings) as conninfo:
        failed: list[Any] = []
        wb = WriteBehindQueue(
            PostgresUpsert(conninfo, "items", "k", connect_timeout=2),
            registry=None,
            flush_interval=0.05,
            retry_backoff_max=0.25,
            on_failure=lambda rows, error: failed.extend(rows),
        )
        wb.start()
        try:
            with producing(wb) as put:
                assert wait_until(lambda: highest(server) >= 0, timeout=30)
                server.stop()
                stopped = time.monotonic()
                time.sleep(DOWN)  # the outage itself: the server is down, nothing to wait for
                before = put[-1]
                server.start()
                back = time.monotonic()
                assert wait_until(lambda: highest(server) > before, timeout=60), (
                    "no write resumed within 60 s of the server being back"
                )
                resumed = time.monotonic()
            assert wb.flush(timeout=60)
            metrics = wb.metrics()
        finally:
            wb.close(timeout=30)
    assert failed == []
    assert metrics.total_failed == 0 and metrics.total_abandoned == 0
    assert metrics.total_persisted == metrics.total_enqueued == len(put)
    with psycopg.connect(server.dsn) as db:
        stored: dict[int, int] = dict(db.execute("SELECT k, v FROM items").fetchall())
    last = {v % 50: v for v in put}
    assert stored == last
    return resumed - stopped, resumed - back


@pytest.mark.timeout(300)
def test_a_restart_behind_pgbouncer_stalls_writes_for_server_login_retry(
    private_server: PrivateServer,
) -> None:
    require(pgbouncer_missing())
    quick_stall, quick = resume_after_restart(private_server, {"server_login_retry": "1"})
    default_stall, default = resume_after_restart(private_server, {})
    print(
        f"\nserver down {DOWN:.0f} s behind PgBouncer: writes stalled {default_stall:.1f} s"
        f" ({default:.1f} s after the server was back) with the default server_login_retry"
        f" (15), {quick_stall:.1f} s ({quick:.1f} s after) with server_login_retry = 1"
    )
    assert quick < 5.0
    assert default > 8.0  # the README's advice rests on this: PgBouncer's wait, not the queue's
