"""Rows the database refuses, one in every batch, and an ``on_failure`` that raises."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors as pe
import pytest

from tests.faults.child import row
from tests.faults.conftest import Failures, Producers, Row, assert_accounted, table_rows, tagged
from writebehind import PostgresUpsert, WriteBehindQueue

pytestmark = pytest.mark.fault

BATCH = 100
POISON_EVERY = 40
"""Each producer thread puts a poison row every 40 rows: with two threads, 4 or 5 rows of every
batch of 100 (the table's CHECK refuses -1, its NOT NULL refuses None)."""


def poisoned(key: int) -> Row:
    if key % (2 * POISON_EVERY) == 0:
        return {"k": key, "v": -1}
    if key % (2 * POISON_EVERY) == POISON_EVERY + 1:
        return {"k": key, "v": None}
    return row(key)


def expected_error(refused: Row) -> type[BaseException]:
    return pe.CheckViolation if refused["v"] is not None else pe.NotNullViolation


def poison_queue(dsn: str, table: str, failures: Failures) -> WriteBehindQueue:
    conninfo, _ = tagged(dsn, table)  # a pool of its own, even if its worker dies
    return WriteBehindQueue(
        PostgresUpsert(conninfo, table, "k"), registry=None, batch_size=BATCH, on_failure=failures
    )


def stream_poison(wb: WriteBehindQueue) -> Producers:
    """Puts 2 × 1,000 rows from two threads, a poison row in every batch, and flushes."""
    with Producers(wb, rows=1000, make_row=poisoned) as producers:
        producers.join()
    assert wb.flush(timeout=60), "flush() gave up: the worker has ended, or a minute passed"
    return producers


def test_a_poison_row_in_every_batch_is_handed_over_alone_and_the_rest_written(
    dsn: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    failures = Failures()
    wb = poison_queue(dsn, rows_table, failures)
    try:
        producers = stream_poison(wb)
    finally:
        wb.close(timeout=30)
    m = assert_accounted(
        wb.metrics(), producers.accepted, table_rows(db, rows_table), failed=failures.rows()
    )
    assert m.failed == 2 * 1000 // POISON_EVERY  # every poison row, and only them
    for rows, error in failures.calls:
        assert len(rows) == 1 and type(error) is expected_error(rows[0]), (rows, error)


@pytest.mark.parametrize(
    "raised",
    [
        pytest.param(lambda: RuntimeError("on_failure is broken"), id="RuntimeError"),
        pytest.param(lambda: SystemExit(3), id="SystemExit"),
    ],
)
def test_an_on_failure_that_raises_is_logged_and_the_queue_goes_on(
    dsn: str,
    db: psycopg.Connection[Any],
    rows_table: str,
    caplog: pytest.LogCaptureFixture,
    raised: Callable[[], BaseException],
) -> None:
    failures = Failures(then_raise=raised)
    wb = poison_queue(dsn, rows_table, failures)
    try:
        with caplog.at_level(logging.ERROR, logger="writebehind"):
            producers = stream_poison(wb)
            wb.put(row(10**9))  # the worker is alive and writing after the last raise
            assert wb.flush(timeout=30)
    finally:
        failures.stop_raising()
        wb.close(timeout=30)
    accepted = {**producers.accepted, 10**9: row(10**9)}
    m = assert_accounted(wb.metrics(), accepted, table_rows(db, rows_table), failed=failures.rows())
    assert m.failed == 2 * 1000 // POISON_EVERY
    raises = [r for r in caplog.records if "on_failure raised" in r.getMessage()]
    assert len(raises) == len(failures.calls) == m.failed
