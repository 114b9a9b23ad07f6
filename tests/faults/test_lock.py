"""A table locked past the write timeout while rows stream, then released."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.errors as pe
import pytest

from tests.conftest import named, wait_until
from tests.faults.conftest import Failures, Producers, assert_accounted, table_rows, tagged
from writebehind import PostgresUpsert, WriteBehindQueue

pytestmark = pytest.mark.fault


def test_rows_behind_a_lock_past_the_write_timeout_are_given_up_or_written_once_released(
    dsn: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    failures = Failures()
    conninfo, _ = tagged(dsn, rows_table)
    wb = WriteBehindQueue(
        PostgresUpsert(conninfo, rows_table, "k", write_timeout=0.25),
        registry=None,
        batch_size=200,
        flush_interval=0.05,
        max_retry_time=1.0,
        retry_backoff=0.05,
        retry_backoff_max=0.2,
        on_failure=failures,
    )
    wb.start()  # opens the sink (reads the catalog) before the table is locked
    try:
        with psycopg.connect(dsn) as locker, Producers(wb, rows=None, pace=0.01) as producers:
            locker.execute(named("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", rows_table))
            # Each write is cancelled at write_timeout and retried, until max_retry_time
            # gives the batch up; later batches get one attempt each while the lock holds.
            assert wait_until(lambda: wb.metrics().total_failed >= 400)
            locker.rollback()
            released_at = producers.count
            assert wait_until(lambda: wb.metrics().total_persisted >= 1000)
            assert producers.count > released_at  # still putting once the lock is gone
        assert wb.flush(timeout=60)
        m = wb.metrics()
    finally:
        wb.close(timeout=30)
    assert_accounted(m, producers.accepted, table_rows(db, rows_table), failed=failures.rows())
    assert m.total_retries >= 2
    assert all(isinstance(error, pe.QueryCanceled) for error in failures.errors())
