"""Bad rows and options on a real PostgreSQL: each fails the call that caused it, naming it."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest

from tests.conftest import create, select
from writebehind import PostgresUpsert, WriteBehindQueue


def queue(dsn: str, table: str, key: str = "id", **sink_options: Any) -> WriteBehindQueue:
    return WriteBehindQueue(PostgresUpsert(dsn, table, key, **sink_options), registry=None)


@pytest.mark.parametrize(
    ("value", "error"),
    [("5", TypeError), (True, TypeError), (None, TypeError), (-1, ValueError), (0, ValueError),
     (math.nan, ValueError), (math.inf, ValueError)],
)  # fmt: skip
def test_connect_timeout_is_checked_when_the_sink_is_built(
    value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="connect_timeout"):
        PostgresUpsert("host=/nonexistent", "t", "id", connect_timeout=value)


def test_a_good_connect_timeout_bounds_the_wait_for_a_connection(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY")
    with queue(dsn, table_name, connect_timeout=2) as wb:
        wb.put({"id": 1})
    assert select(db, table_name) == [(1,)]
