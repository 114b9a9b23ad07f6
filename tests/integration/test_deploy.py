"""Forks, several writers and queue-wide coalescing, on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import threading
import warnings
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named, select, wait_until
from tests.integration import forkpool
from writebehind import PostgresUpsert, WriteBehindQueue

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def backends(db: psycopg.Connection[Any], application_name: str) -> set[int]:
    rows = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
    ).fetchall()
    return {pid for (pid,) in rows}


def with_application_name(dsn: str, name: str) -> str:
    separator = "&" if "?" in dsn else "?"
    return f"{dsn}{separator}application_name={name}"


def test_a_child_forked_after_start_writes_on_connections_of_its_own(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, writer text NOT NULL, backend int")
    db.execute(
        named(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "NEW.backend := pg_backend_pid(); RETURN NEW; END $$",
            f"{table_name}_backend",
        )
    )
    db.execute(
        named(
            "CREATE TRIGGER backend BEFORE INSERT OR UPDATE ON {} "
            "FOR EACH ROW EXECUTE FUNCTION {}()",
            table_name,
            f"{table_name}_backend",
        )
    )
    app = f"wb_fork_{os.getpid()}"
    wb = WriteBehindQueue(
        PostgresUpsert(
            with_application_name(dsn, app), table_name, key="id", columns=["id", "writer"]
        ),
        registry=None,
        flush_interval=3600,
    )
    try:
        for key in range(100):
            wb.put({"id": key, "writer": "parent"})
        assert wb.flush(timeout=30)
        parents_backends = {backend for (backend,) in select(db, table_name, "backend")}
        for key in range(100, 200):
            wb.put({"id": key, "writer": "parent"})  # waiting at the fork: the parent's
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
            pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read)
                fresh = wb.metrics().total_enqueued == 0
                for key in range(1000, 1100):
                    wb.put({"id": key, "writer": "child"})
                flushed = wb.flush(timeout=30)
                metrics = wb.metrics()
                wb.close(timeout=30)
                os.write(write, repr((fresh, flushed, metrics.total_persisted)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as report:
            fresh, flushed, persisted = eval(report.read())  # noqa: S307 (our own child's repr)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (fresh, flushed, persisted) == (True, True, 100)
        # The parent's queue goes on, on its own connections, which the child never touched.
        for key in range(200, 300):
            wb.put({"id": key, "writer": "parent"})
        assert wb.flush(timeout=30)
        assert wb.metrics().total_retries == 0
        assert wb.metrics().total_persisted == 300
    finally:
        wb.close(timeout=30)
    rows = select(db, table_name, "id, writer, backend")
    assert [r[0] for r in rows] == [*range(300), *range(1000, 1100)]
    assert {r[1] for r in rows if r[0] >= 1000} == {"child"}
    assert {r[1] for r in rows if r[0] < 1000} == {"parent"}
    child_backends = {r[2] for r in rows if r[0] >= 1000}
    assert child_backends.isdisjoint(parents_backends)
    assert child_backends.isdisjoint({r[2] for r in rows if r[0] < 1000})


def test_a_multiprocessing_fork_pool_writes_every_row_through_a_module_level_queue(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, pid int NOT NULL")
    forkpool.QUEUE = WriteBehindQueue(
        PostgresUpsert(dsn, table_name, key="id"), registry=None, flush_interval=3600
    )
    try:
        forkpool.QUEUE.put({"id": -1, "pid": os.getpid()})  # started in the parent
        assert forkpool.QUEUE.flush(timeout=30)
        chunks = [(start, start + 500) for start in range(0, 4000, 500)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
            pool = multiprocessing.get_context("fork").Pool(2, maxtasksperchild=2)
        try:
            pids = pool.map(forkpool.put_range, chunks)
        finally:
            pool.close()
            pool.join()  # each worker drains its queue when it exits
        assert os.getpid() not in pids and len(set(pids)) >= 2
        count, distinct = db.execute(
            named("SELECT count(*), count(DISTINCT pid) FROM {} WHERE id >= 0", table_name)
        ).fetchone() or (0, 0)
        assert (count, distinct) == (4000, len(set(pids)))
    finally:
        forkpool.QUEUE.close(timeout=30)
        forkpool.QUEUE = None


def test_two_writers_write_on_two_connections_and_keep_each_keys_last_value(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v int NOT NULL")
    app = f"wb_writers_{os.getpid()}"
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(dsn, autocommit=True) as watcher:
            while not stop.is_set():
                seen.update(
                    pid
                    for (pid,) in watcher.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                        "AND state = 'active'",
                        [app],
                    ).fetchall()
                )
                stop.wait(0.005)

    wb = WriteBehindQueue(
        PostgresUpsert(with_application_name(dsn, app), table_name, key="id", pool_size=2),
        registry=None,
        writers=2,
        batch_size=200,
    )
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:

        def produce(first: int) -> None:
            for value in range(20):
                for key in range(first, 2000, 2):
                    wb.put({"id": key, "v": value})

        producers = [threading.Thread(target=produce, args=(first,)) for first in (0, 1)]
        for producer in producers:
            producer.start()
        for producer in producers:
            producer.join()
        assert wb.flush(timeout=60)
        m = wb.metrics()
        assert m.total_enqueued == m.total_persisted == 40_000
        assert m.total_retries == 0
    finally:
        stop.set()
        watcher.join()
        wb.close(timeout=30)
    assert select(db, table_name) == [(key, 19) for key in range(2000)]
    # Closed with the queue: the server's backends end just after their client hangs up.
    assert wait_until(lambda: not backends(db, app), timeout=10)
    assert len(seen) >= 2, f"writes seen on {seen}"


def test_options_the_sink_cannot_honour_are_refused(dsn: str, table_name: str) -> None:
    with pytest.raises(ValueError, match="coalesce=True needs a sink with a key"):
        WriteBehindQueue(PostgresUpsert(dsn, table_name, key=None), registry=None, coalesce=True)
    with pytest.raises(ValueError, match="pool_size"):
        WriteBehindQueue(
            PostgresUpsert(dsn, table_name, key="id", pool_size=2), registry=None, writers=3
        )


def test_coalesce_merges_a_hot_key_into_its_waiting_row_by_the_sinks_rules(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "page text PRIMARY KEY, views bigint NOT NULL, last_seen int NOT NULL")
    written: list[int] = []

    class Counting(PostgresUpsert):
        def write(self, rows: Any, progress: Any = ()) -> None:
            super().write(rows, progress)
            written.append(len(rows))

    sink = Counting(dsn, table_name, key="page", merge={"views": "add", "last_seen": "max"})
    wb = WriteBehindQueue(
        sink, registry=None, coalesce=True, maxsize=50, batch_size=50, flush_interval=3600
    )
    try:
        wb.put({"page": "/warm", "views": 1, "last_seen": 0})
        assert wb.flush(timeout=30)
        for second in range(1, 3001):  # 3,000 puts into a queue of 50: one waiting row per page
            wb.put({"page": "/hot" if second % 3 else "/warm", "views": 1, "last_seen": second})
        assert wb.flush(timeout=30)
        m = wb.metrics()
        assert m.total_enqueued == m.total_persisted == 3001
    finally:
        wb.close(timeout=30)
    assert written == [1, 2]
    assert select(db, table_name) == [("/hot", 2000, 2999), ("/warm", 1001, 3000)]
