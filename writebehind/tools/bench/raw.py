"""The baselines: what an application would write by hand with psycopg, one transaction per batch.

Both loops turn each dict into a parameter list as writebehind does, and are timed from the
first batch to the last commit (connecting, and creating the staging table, are not timed;
``before_timing()`` is called just before the clock starts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from .workload import COLUMN_TYPES, COLUMNS, as_params, upsert_statement

__all__ = ["STAGING_TABLE", "raw_copy", "raw_executemany"]

STAGING_TABLE = "writebehind_bench_staging"

ConnectionClass = type[psycopg.Connection[Any]]


def raw_executemany(
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    connection_class: ConnectionClass = psycopg.Connection,
    before_timing: Callable[[], None] | None = None,
) -> float:
    """``executemany`` of one ``INSERT ... VALUES ... ON CONFLICT`` per batch (psycopg prepares
    it after a few executions and pipelines the rows). Returns seconds."""
    query = upsert_statement(table)
    with connection_class.connect(dsn) as conn, conn.cursor() as cur:
        if before_timing is not None:
            before_timing()
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            params = as_params(rows[start : start + batch_size])
            with conn.transaction():
                cur.executemany(query, params)
        return time.perf_counter() - started


def raw_copy(
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    connection_class: ConnectionClass = psycopg.Connection,
    before_timing: Callable[[], None] | None = None,
    each_batch: Callable[[Sequence[dict[str, Any]]], Sequence[dict[str, Any]]] | None = None,
) -> float:
    """Per batch: binary COPY into a temporary staging table, then one ``INSERT ... SELECT ...
    ON CONFLICT``. The staging table is created once per connection, ``ON COMMIT DELETE ROWS``
    (the fastest a hand-written loop on a connection of its own can do; behind PgBouncer in
    transaction mode it would have to be created in every transaction). ``each_batch``, if
    given, makes each batch's rows into those written, inside the timing. Returns seconds."""
    staging = sql.Identifier(STAGING_TABLE)
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    copy_statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(staging, columns)
    insert = upsert_statement(table, source=STAGING_TABLE)
    with connection_class.connect(dsn) as conn, conn.cursor() as cur:
        with conn.transaction():
            cur.execute(
                sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                    staging, sql.Identifier(table)
                )
            )
        if before_timing is not None:
            before_timing()
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            params = as_params(batch if each_batch is None else each_batch(batch))
            with conn.transaction():
                with cur.copy(copy_statement) as copy:
                    copy.set_types(COLUMN_TYPES)
                    for values in params:
                        copy.write_row(values)
                cur.execute(insert)
        return time.perf_counter() - started
