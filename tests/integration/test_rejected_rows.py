"""Rows the database refuses for good are isolated from their batch, on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest

from tests.conftest import create, select
from writebehind import PostgresUpsert, WriteBehindQueue

# Every guarantee holds for every write method.
pytestmark = pytest.mark.usefixtures("every_method")


def test_poison_rows_among_good_ones(
    dsn: str, db: psycopg.Connection[Any], table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    create(
        db,
        table_name,
        "id int PRIMARY KEY, qty int NOT NULL CHECK (qty >= 0), code varchar(4), amount int",
    )
    bad: dict[int, dict[str, Any]] = {
        13: {"id": 13, "qty": -1, "code": "ok", "amount": 1},  # check violation
        57: {"id": 57, "qty": None, "code": "ok", "amount": 1},  # not null
        222: {"id": 222, "qty": 1, "code": "too long", "amount": 1},  # value too long
        401: {"id": 401, "qty": 1, "code": "ok", "amount": "forty"},  # invalid text for int
        402: {"id": 402, "qty": 1, "code": "ok", "amount": 2**40},  # int out of range
    }
    failed: list[tuple[list[Mapping[str, Any]], BaseException]] = []
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table_name, "id"),
        registry=None,
        batch_size=250,
        on_failure=lambda rows, error: failed.append((rows, error)),
    )
    with caplog.at_level(logging.ERROR, logger="writebehind"), wb:
        for i in range(500):
            wb.put(bad.get(i, {"id": i, "qty": i, "code": "ok", "amount": i}))
    assert [row[0] for row in select(db, table_name, "id")] == [
        i for i in range(500) if i not in bad
    ]
    assert sorted(rows[0]["id"] for rows, _ in failed) == sorted(bad)
    assert all(len(rows) == 1 and rows[0] == bad[rows[0]["id"]] for rows, _ in failed)
    kinds = {rows[0]["id"]: type(error) for rows, error in failed}
    assert kinds[13] is psycopg.errors.CheckViolation
    assert kinds[57] is psycopg.errors.NotNullViolation
    assert kinds[222] is psycopg.errors.StringDataRightTruncation
    assert kinds[401] is psycopg.errors.InvalidTextRepresentation
    assert kinds[402] is psycopg.errors.NumericValueOutOfRange
    m = wb.metrics()
    assert (m.total_persisted, m.total_failed, m.total_retries) == (495, 5, 0)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"keys {key}:" in logged for key in bad)


def test_a_rejected_row_does_not_undo_an_earlier_value_of_its_key(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    with WriteBehindQueue(PostgresUpsert(dsn, entries, "verikey"), registry=None) as wb:
        wb.put({"verikey": "a", "n": 1, "doc": None})
        assert wb.flush(timeout=30)
        wb.put({"verikey": "a", "n": -1, "doc": None})
    assert select(db, entries, "verikey, n") == [("a", 1)]


def test_a_refused_row_is_logged_once_by_writebehind_not_again_by_psycopg(
    dsn: str, entries: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING),
        WriteBehindQueue(PostgresUpsert(dsn, entries, "verikey"), registry=None) as wb,
    ):
        for i in range(200):  # psycopg warns when rows follow the refused one in its pipeline
            wb.put({"verikey": f"k{i:03}", "n": -1 if i == 100 else i, "doc": None})
    assert [r.name for r in caplog.records if r.name.startswith("psycopg")] == []
    refusals = [r.getMessage() for r in caplog.records if r.name == "writebehind"]
    assert len(refusals) == 1 and "'k100'" in refusals[0] and "CheckViolation" in refusals[0]
