"""Calling back into the queue from on_failure never hangs it, on PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named, select, wait_until
from writebehind import PostgresUpsert, WriteBehindQueue


def test_a_fixed_row_put_again_from_on_failure_on_a_full_queue_is_accepted_at_once(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, n int NOT NULL CHECK (n >= 0)")
    fixed = threading.Event()

    def put_fixed(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        # The writer goes on while on_failure runs (on a thread of its own): hold it behind a
        # lock until the producer has filled the queue, then put the fixed row.
        buffer = wb._buffer
        with psycopg.connect(dsn) as locker:
            locker.execute(named("LOCK TABLE {}", table_name))
            assert wait_until(lambda: buffer.qsize() + buffer.held >= buffer.maxsize, timeout=30)
            for row in rows:
                wb.put({"id": row["id"], "n": 0})  # the queue is full: this must not wait
            fixed.set()

    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table_name, "id"),
        registry=None,
        maxsize=10,
        batch_size=10,
        on_failure=put_fixed,
    )

    def produce() -> None:
        for i in range(1, 300):
            wb.put({"id": i, "n": i})  # keeps the queue full

    producer = threading.Thread(target=produce)
    wb.put({"id": 0, "n": -1})
    producer.start()
    producer.join(60)
    assert not producer.is_alive() and fixed.wait(30)
    assert wb.flush(timeout=30)
    wb.close(timeout=30)
    assert select(db, table_name) == [(0, 0)] + [(i, i) for i in range(1, 300)]
    m = wb.metrics()
    assert (m.total_enqueued, m.total_persisted, m.total_failed) == (301, 300, 1)


def test_flush_from_on_failure_raises_and_the_worker_goes_on(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, n int NOT NULL CHECK (n >= 0)")
    raised: list[BaseException] = []

    def flush_there(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        try:
            wb.flush(timeout=None)
        except RuntimeError as error:
            raised.append(error)

    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table_name, "id"), registry=None, on_failure=flush_there
    )
    with wb:
        wb.put({"id": 1, "n": -1})
        assert wb.flush(timeout=30)
        wb.put({"id": 2, "n": 2})
    assert len(raised) == 1 and "on_failure" in str(raised[0])
    assert select(db, table_name) == [(2, 2)]


def test_close_from_on_failure_returns_and_the_batch_is_finished(
    dsn: str, db: psycopg.Connection[Any], table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    create(db, table_name, "id int PRIMARY KEY, n int NOT NULL CHECK (n >= 0)")
    returned = threading.Event()

    def close_there(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        wb.close()
        returned.set()

    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table_name, "id"), registry=None, batch_size=10, on_failure=close_there
    )
    with caplog.at_level(logging.WARNING, logger="writebehind"):
        for i in range(10):
            wb.put({"id": i, "n": -1 if i == 0 else i})
        assert wb.flush(timeout=30) and returned.is_set()
        wb.close(timeout=30)
    assert [i for (i,) in select(db, table_name, "id")] == list(range(1, 10))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        r.getMessage() for r in caplog.records if "rows rejected" in r.getMessage()
    ]
