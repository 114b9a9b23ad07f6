"""End-to-end upsert throughput: writebehind against a raw psycopg loop, in one run.

    python benchmarks/throughput.py [--dsn DSN] [--rows N] [--batch-size B ...] [--runs R]

Both sides update the same existing keys of a 9-column table (~350-byte rows with a jsonb
column) from the same list of dicts, with the same statement and one transaction per batch of
B rows. The raw loop turns each dict into a tuple and calls executemany; writebehind is timed
from the first put() to the end of flush(). Runs alternate between the two; the table shows
medians, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.types.json import Jsonb

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.embedded import database

TABLE = "bench_rows"
COLUMNS = ("id", "name", "email", "city", "score", "ratio", "active", "updated", "attrs")


def make_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    return [
        {
            "id": i,
            "name": f"user-{i}-{rng.randrange(10**6)}",
            "email": f"user{i}@example.org",
            "city": rng.choice(["Lisbon", "Oslo", "Quito", "Osaka", "Accra"]),
            "score": rng.randrange(10**6),
            "ratio": rng.random(),
            "active": rng.random() < 0.5,
            "updated": now,
            "attrs": {
                "plan": rng.choice(["free", "pro", "team"]),
                "tags": [rng.randrange(100) for _ in range(8)],
                "note": "x" * rng.randrange(60, 120),
                "visits": rng.randrange(1000),
            },
        }
        for i in range(count)
    ]


def upsert_statement() -> sql.Composed:
    updated = [c for c in COLUMNS if c != "id"]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}").format(
        sql.Identifier(TABLE),
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
        sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in updated
        ),
    )


def prepare_table(dsn: str, rows: Sequence[dict[str, Any]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
        conn.execute(
            sql.SQL(
                """CREATE TABLE {} (id bigint PRIMARY KEY, name text, email text, city text,
                score integer, ratio double precision, active boolean, updated timestamptz,
                attrs jsonb)"""
            ).format(sql.Identifier(TABLE))
        )
    raw_loop(dsn, rows, 1000)  # every later write takes the update path


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))


def raw_loop(dsn: str, rows: Sequence[dict[str, Any]], batch_size: int) -> float:
    """The baseline: what an application would write by hand. Returns seconds."""
    query = upsert_statement()
    as_tuple = itemgetter(*COLUMNS)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            params = []
            for row in rows[start : start + batch_size]:
                values = list(as_tuple(row))
                values[-1] = Jsonb(values[-1])
                params.append(values)
            with conn.transaction():
                cur.executemany(query, params)
        return time.perf_counter() - started


def writebehind_run(dsn: str, rows: Sequence[dict[str, Any]], batch_size: int) -> float:
    sink = PostgresUpsert(dsn, table=TABLE, key="id")
    # Metrics on, as by default; a registry of its own so that runs do not add up.
    with WriteBehindQueue(sink, batch_size=batch_size, registry=CollectorRegistry()) as wb:
        wb.start()  # connecting and reading the catalog is not part of the timed work
        put = wb.put
        started = time.perf_counter()
        for row in rows:
            put(row)
        assert wb.flush()
        elapsed = time.perf_counter() - started
        metrics = wb.metrics()
    assert metrics.total_persisted == len(rows) and metrics.total_failed == 0
    return elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", help="conninfo; default: an embedded server")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    with database(args.dsn) as dsn:
        rows = make_rows(args.rows, seed=1)
        prepare_table(dsn, rows)
        # Autovacuum would wake at random during the runs; each run vacuums first instead.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(
                    sql.Identifier(TABLE)
                )
            )
        print(f"{args.rows} rows per run, update path, medians of {args.runs} runs\n")
        print("| batch | raw psycopg rows/s | writebehind rows/s | ratio |")
        print("|---:|---:|---:|---:|")
        for batch_size in args.batch_size:
            raw: list[float] = []
            wb: list[float] = []
            for run in range(args.runs):
                # Alternate who goes first so that drift on a shared machine hits both.
                order = [raw_loop, writebehind_run] if run % 2 == 0 else [writebehind_run, raw_loop]
                for runner in order:
                    vacuum(dsn)  # the same table state for every run: no bloat from the last
                    seconds = runner(dsn, rows, batch_size)
                    (raw if runner is raw_loop else wb).append(args.rows / seconds)
            raw_median, wb_median = statistics.median(raw), statistics.median(wb)
            print(
                f"| {batch_size} | {raw_median:,.0f} | {wb_median:,.0f} "
                f"| {wb_median / raw_median:.2f} |"
            )


if __name__ == "__main__":
    main()
