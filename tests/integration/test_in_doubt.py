"""A write whose connection is lost after its COMMIT reached the server (the reply lost on the
way back, through a proxy that drops it) is in doubt: on PostgreSQL, for every write method,
rows given up then are handed over as CommitInDoubt, and are in the table; rows whose
connection was lost before COMMIT are not in doubt, and not in the table. With a journal,
nothing is in doubt."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import WRITE_METHODS, create, select
from tests.proxy import Drop, LossyProxy, lossy_proxy
from writebehind import CommitInDoubt, Journal, PostgresUpsert, WriteBehindQueue

Failure = tuple[list[Mapping[str, Any]], BaseException]

# What the client sends that commits the write, per method: the statement itself for unnest
# (one statement in autocommit), "INSERT ...; COMMIT" for copy, COMMIT for executemany.
# (copy's first round trip holds "ON COMMIT DROP": its COMMIT follows a semicolon).
COMMITS = {"unnest": b"INSERT", "copy": b"; COMMIT", "executemany": b"COMMIT"}
# What the client sends before it commits: the staging table (copy), the transaction's BEGIN
# (executemany: its INSERT is a statement prepared at the first write, not sent again).
BEFORE_COMMIT = {"copy": b"CREATE TEMPORARY", "executemany": b"BEGIN"}


@pytest.fixture
def proxy(dsn: str) -> Iterator[LossyProxy]:
    with lossy_proxy(dsn) as lossy:
        yield lossy


def queue(sink: PostgresUpsert, failures: list[Failure], **options: Any) -> WriteBehindQueue:
    return WriteBehindQueue(
        sink,
        registry=None,
        retry_backoff=0.01,
        retry_backoff_max=0.05,
        on_failure=lambda rows, error: failures.append((rows, error)),
        **options,
    )


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_rows_given_up_after_lost_commit_replies_are_in_doubt_and_in_the_table(
    proxy: LossyProxy, db: psycopg.Connection[Any], table_name: str, method: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v text")
    failures: list[Failure] = []
    sink = PostgresUpsert(proxy.dsn, table_name, "id", method=method)
    wb = queue(sink, failures, max_retries=2)
    try:
        wb.put({"id": 0, "v": "before"})
        assert wb.flush(timeout=30)
        proxy.arm(Drop(COMMITS[method]))
        wb.put_many([{"id": i, "v": f"v{i}"} for i in range(1, 201)])
        assert wb.flush(timeout=60)
        proxy.arm(None)
        m = wb.metrics()
    finally:
        wb.close(timeout=30)
    assert proxy.dropped == 3  # the first attempt and two retries
    ((rows, error),) = failures
    assert sorted(row["id"] for row in rows) == list(range(1, 201))
    assert isinstance(error, CommitInDoubt)
    assert isinstance(error.__cause__, psycopg.OperationalError)
    assert (m.total_failed, m.total_in_doubt, m.total_persisted) == (200, 200, 1)
    # In doubt, and in fact written: each lost reply was of a COMMIT the server had done.
    assert len(select(db, table_name)) == 201


@pytest.mark.parametrize("method", sorted(BEFORE_COMMIT))
def test_rows_whose_connection_was_lost_before_commit_are_not_in_doubt(
    proxy: LossyProxy, db: psycopg.Connection[Any], table_name: str, method: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v text")
    failures: list[Failure] = []
    sink = PostgresUpsert(proxy.dsn, table_name, "id", method=method)
    wb = queue(sink, failures, max_retries=2)
    try:
        wb.put({"id": 0, "v": "before"})
        assert wb.flush(timeout=30)
        proxy.arm(Drop(BEFORE_COMMIT[method], reply=False))
        wb.put_many([{"id": i, "v": f"v{i}"} for i in range(1, 51)])
        assert wb.flush(timeout=60)
        proxy.arm(None)
        m = wb.metrics()
    finally:
        wb.close(timeout=30)
    ((rows, error),) = failures
    assert len(rows) == 50
    assert isinstance(error, psycopg.OperationalError) and not isinstance(error, CommitInDoubt)
    assert (m.total_failed, m.total_in_doubt) == (50, 0)
    assert select(db, table_name) == [(0, "before")]


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_a_lost_commit_reply_counts_a_merge_twice_without_a_journal_and_once_with_one(
    proxy: LossyProxy,
    db: psycopg.Connection[Any],
    table_name: str,
    method: str,
    tmp_path: Path,
) -> None:
    create(db, table_name, "id int PRIMARY KEY, n bigint NOT NULL")
    counts = {}
    for journal in (None, Journal(tmp_path)):
        db.execute(f"TRUNCATE {table_name}")
        failures: list[Failure] = []
        sink = PostgresUpsert(proxy.dsn, table_name, "id", method=method, merge={"n": "add"})
        wb = queue(sink, failures, journal=journal, name=f"merge-{method}")
        try:
            wb.put({"id": 1, "n": 1})
            assert wb.flush(timeout=30)
            proxy.arm(Drop(COMMITS[method], times=1))  # one reply lost; the retry goes through
            wb.put({"id": 1, "n": 1})
            assert wb.flush(timeout=60)
            m = wb.metrics()
        finally:
            proxy.arm(None)
            wb.close(timeout=30)
        assert failures == [] and m.total_in_doubt == 0
        counts["journal" if journal else "none"] = select(db, table_name)
    # Without a journal the retry adds the second put again (the README says so); with one,
    # the retry finds the progress table moved, and the rows written.
    assert counts == {"none": [(1, 3)], "journal": [(1, 2)]}
