"""Deletes beside upserts, and model instances beside dicts.

Throughput: ``OPS`` writes over ``KEYS`` keys of a table filled first (the update path), one
producer thread, batches of ``BATCH``, timed from the first call to the end of flush():
upserts alone, and the same writes with every tenth one a delete of its key. The raw psycopg
loop does the same writes, batch by batch, in a transaction each: ``executemany`` of the
upserts, then of the deletes. Each run is checked against the writes applied in order.

put(): the seconds per put() of a dict and of a SQLAlchemy mapped instance (with the
SQLAlchemy extra), into a queue with room for all of them, without writing meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.tools.bench.stats import Rates
from writebehind.tools.bench.throughput import turns
from writebehind.tools.bench.workload import CheckFailed

__all__ = ["BATCH", "DELETE_EVERY", "KEYS", "DeletesResult", "measure_deletes"]

KEYS = 10_000
BATCH = 1000
DELETE_EVERY = 10
RAW = "raw psycopg executemany"
UPSERTS = "writebehind, upserts only"
MIXED = "writebehind, 10% deletes"
RAW_MIXED = "raw psycopg, 10% deletes"


@dataclass
class DeletesResult:
    """ops/s per side (medians of the runs), and µs per put() by kind of row."""

    rates: dict[str, Rates]
    put_micros: dict[str, float]
    ops: int


def _ops(count: int, deletes: bool) -> list[tuple[bool, int, int]]:
    """(is a delete, key, value) of each write."""
    return [(deletes and i % DELETE_EVERY == DELETE_EVERY - 1, i % KEYS, i) for i in range(count)]


def _expected(ops: list[tuple[bool, int, int]]) -> dict[int, int]:
    table = {key: -1 for key in range(KEYS)}
    for deleting, key, value in ops:
        if deleting:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def measure_deletes(
    dsn: str, table: str, ops: int, runs: int, log: Callable[[str], None]
) -> DeletesResult:
    """Run every side ``runs`` times, taking turns; CheckFailed for a wrong table."""
    name = sql.Identifier(table)
    workloads = {UPSERTS: _ops(ops, False), MIXED: _ops(ops, True)}
    workloads[RAW] = workloads[UPSERTS]
    workloads[RAW_MIXED] = workloads[MIXED]
    rates = {label: Rates(label) for label in workloads}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v bigint NOT NULL)").format(name)
        )
        try:
            for run in range(runs):
                for label in turns(list(workloads), run):
                    conn.execute(sql.SQL("TRUNCATE {}").format(name))
                    conn.execute(
                        sql.SQL("INSERT INTO {} SELECT g, -1 FROM generate_series(0, %s) g").format(
                            name
                        ),
                        (KEYS - 1,),
                    )
                    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
                    writes = workloads[label]
                    write = _raw if label.startswith("raw") else _queued
                    seconds = write(dsn, table, writes)
                    found: dict[int, int] = dict(
                        conn.execute(sql.SQL("SELECT id, v FROM {}").format(name))
                    )
                    if found != _expected(writes):
                        raise CheckFailed(f"deletes section, {label}: the table is not as written")
                    rates[label].values.append(len(writes) / seconds)
                    log(f"deletes: {label}: {len(writes) / seconds:,.0f} ops/s")
            micros = _put_micros(dsn, table, min(ops, 50_000))
        finally:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    return DeletesResult(rates, micros, ops)


def _queued(dsn: str, table: str, writes: list[tuple[bool, int, int]]) -> float:
    sink = PostgresUpsert(dsn, table, "id")
    with WriteBehindQueue(sink, registry=None, batch_size=BATCH, maxsize=10 * BATCH) as wb:
        wb.start()
        started = time.perf_counter()
        for deleting, key, value in writes:
            if deleting:
                wb.delete(key)
            else:
                wb.put({"id": key, "v": value})
        if not wb.flush(timeout=600):
            raise CheckFailed("deletes section: the queue did not flush")
        return time.perf_counter() - started


def _raw(dsn: str, table: str, writes: list[tuple[bool, int, int]]) -> float:
    name = sql.Identifier(table)
    upsert = sql.SQL(
        "INSERT INTO {} (id, v) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v"
    ).format(name)
    delete = sql.SQL("DELETE FROM {} WHERE id = %s").format(name)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for start in range(0, len(writes), BATCH):
            # A batch's last write of each key, as a queue's batch keeps it.
            last: dict[int, tuple[bool, int]] = {}
            for deleting, key, value in writes[start : start + BATCH]:
                last[key] = (deleting, value)
            puts = [(key, value) for key, (deleting, value) in last.items() if not deleting]
            gone = [(key,) for key, (deleting, _) in last.items() if deleting]
            cur.executemany(upsert, puts)
            if gone:
                cur.executemany(delete, gone)
            conn.commit()
        return time.perf_counter() - started


def _put_micros(dsn: str, table: str, count: int) -> dict[str, float]:
    """µs per put() of a dict, and of a SQLAlchemy instance where SQLAlchemy is installed."""
    rows: dict[str, Callable[[int], Any]] = {"dict": lambda i: {"id": i % KEYS, "v": i}}
    sink_table: dict[str, Any] = {"dict": table}
    try:
        model = _mapped(table)
    except ImportError:
        model = None
    if model is not None:
        rows["SQLAlchemy instance"] = lambda i: model(id=i % KEYS, v=i)
        sink_table["SQLAlchemy instance"] = model
    micros = {}
    for label, make in rows.items():
        values = [make(i) for i in range(count)]
        sink = PostgresUpsert(dsn, sink_table[label], "id")
        with WriteBehindQueue(
            sink, registry=None, maxsize=count + 1, batch_size=count + 1, flush_interval=3600
        ) as wb:
            wb.start()
            started = time.perf_counter()
            for value in values:
                wb.put(value)
            micros[label] = (time.perf_counter() - started) / count * 1e6
    return micros


def _mapped(table: str) -> type[Any]:
    import sqlalchemy
    from sqlalchemy.orm import registry

    mapper = registry()
    columns = sqlalchemy.Table(
        table,
        mapper.metadata,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
        sqlalchemy.Column("v", sqlalchemy.BigInteger, nullable=False),
    )

    class Row:
        def __init__(self, **values: Any) -> None:
            for name, value in values.items():
                setattr(self, name, value)

    mapper.map_imperatively(Row, columns)
    return Row
