"""put() never waits on the database: a server that is down, silent or refusing us."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import PrivateServer, create, named, select, wait_until
from writebehind import PostgresUpsert, SchemaError, WriteBehindQueue

Failure = tuple[list[Mapping[str, Any]], BaseException]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a server that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    try:
        yield f"host=127.0.0.1 port={port} dbname=app user=app"
    finally:
        listener.close()


def timed(action: Any) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def test_put_never_waits_while_the_server_is_down_and_the_rows_follow_when_it_returns(
    private_server: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "id int PRIMARY KEY, v int")
    private_server.stop()
    wb = WriteBehindQueue(
        PostgresUpsert(private_server.dsn, "items", "id", connect_timeout=2),
        registry=None,
        name="down",
        flush_interval=0.05,
    )
    with caplog.at_level(logging.WARNING, logger="writebehind"), wb:
        first = timed(lambda: wb.put({"id": 0, "v": 0}))
        others = [timed(lambda i=i: wb.put({"id": i, "v": i})) for i in range(1, 1000)]
        nowait = timed(lambda: wb.put_nowait({"id": 1000, "v": 1000}))
        assert first < 2 + 1.5, f"first put took {first:.2f}s"
        assert max(others + [nowait]) < 0.5 and sum(others) < 2.0
        assert wb.metrics().total_enqueued == 1001
        assert wait_until(lambda: "cannot open the sink" in caplog.text)
        private_server.start()
        assert wb.flush(timeout=60)
    with psycopg.connect(private_server.dsn) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (1001,)
    refused = [r.getMessage() for r in caplog.records if "cannot open the sink" in r.getMessage()]
    assert refused and all("queue down" in line for line in refused)
    assert "No such file or directory" in refused[0] or "Connection refused" in refused[0]
    assert "PoolTimeout" not in caplog.text


def test_on_a_silent_server_the_first_put_spends_one_connection_attempt_and_no_more(
    silent_server: str,
) -> None:
    def build(name: str) -> WriteBehindQueue:
        sink = PostgresUpsert(silent_server, "items", "id", connect_timeout=2)
        return WriteBehindQueue(sink, registry=None, name=name, max_retry_time=1.0)

    wb = build("silent")
    durations: list[float] = []
    threads = [
        threading.Thread(target=lambda i=i: durations.append(timed(lambda: wb.put({"id": i}))))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Four threads' first puts wait for the same attempt: none queues behind another.
    assert len(durations) == 4 and max(durations) < 2 + 1.5, durations
    assert timed(lambda: wb.put({"id": 5})) < 0.2
    fresh = build("silent-nowait")
    assert timed(lambda: fresh.put_nowait({"id": 1})) < 0.2
    bounded = build("silent-timeout")
    assert timed(lambda: bounded.put({"id": 1}, timeout=0.3)) < 0.3 + 0.3
    for queue in (wb, fresh, bounded):
        queue.close(timeout=30)
        assert queue.pending_rows() == 0  # given up once max_retry_time ran out


def test_a_configuration_the_server_refuses_is_raised_by_put_with_its_own_message(
    private_server: PrivateServer,
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "id int PRIMARY KEY, v int")
        db.execute("CREATE ROLE wb_pw LOGIN PASSWORD 'right'")
        db.execute("GRANT ALL ON items TO wb_pw")
        hba = Path(db.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        hba.write_text("local all wb_pw scram-sha-256\n" + hba.read_text())
        db.execute("SELECT pg_reload_conf()")
    cases = {
        "password authentication failed": make_conninfo(
            private_server.dsn, user="wb_pw", password="wrong"
        ),
        'database "nope" does not exist': make_conninfo(private_server.dsn, dbname="nope"),
    }
    for message, conninfo in cases.items():
        wb = WriteBehindQueue(PostgresUpsert(conninfo, "items", "id"), registry=None)
        for _ in range(2):  # the first put, and every one after it, at once
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match=message):
                wb.put({"id": 1, "v": 1})
            assert time.monotonic() - started < 2.0
        assert wb.metrics().total_enqueued == 0
        wb.close(timeout=10)
    right = make_conninfo(private_server.dsn, user="wb_pw", password="right")
    with WriteBehindQueue(PostgresUpsert(right, "items", "id"), registry=None) as wb:
        wb.put({"id": 1, "v": 1})


def test_a_missing_table_is_raised_at_put_until_it_exists(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    sink = PostgresUpsert(dsn, table_name, "id")
    with WriteBehindQueue(sink, registry=None, retry_backoff_max=0.2) as wb:
        with pytest.raises(SchemaError, match="does not exist"):
            wb.put({"id": 1, "v": 1})
        create(db, table_name, "id int PRIMARY KEY, v int")

        def accepted() -> bool:
            try:
                wb.put({"id": 1, "v": 1})
            except SchemaError:
                return False
            return True

        assert wait_until(accepted, timeout=30)
    assert select(db, table_name) == [(1, 1)]


def test_rows_put_before_the_catalog_was_read_are_checked_when_it_is(
    private_server: PrivateServer,
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "id int PRIMARY KEY, v int")
    private_server.stop()
    failures: list[Failure] = []
    bad = [{"id": 2, "v": 2, "extra": 1}, {"id": 3}]
    wb = WriteBehindQueue(
        PostgresUpsert(private_server.dsn, "items", "id", connect_timeout=2),
        registry=None,
        on_failure=lambda rows, error: failures.append((rows, error)),
    )
    with wb:
        wb.put({"id": 1, "v": 1})
        for row in bad:
            wb.put(row)  # accepted: the columns are not known yet
        with pytest.raises(TypeError, match="Mapping"):
            wb.put([("id", 4)])
        private_server.start()
        assert wb.flush(timeout=60)
    assert [rows for rows, _ in failures] == [[bad[0]], [bad[1]]]
    assert all(isinstance(error, ValueError) for _, error in failures)
    assert "unknown column(s) 'extra'" in str(failures[0][1])
    assert "missing column(s) 'v'" in str(failures[1][1])
    m = wb.metrics()
    assert (m.total_persisted, m.total_failed, m.current_queue_depth) == (1, 2, 0)
    with psycopg.connect(private_server.dsn) as db:
        assert db.execute(named("SELECT id, v FROM {}", "items")).fetchall() == [(1, 1)]
