"""End-to-end upsert throughput: writebehind against a raw psycopg loop doing the same writes.

    python benchmarks/throughput.py [--dsn DSN] [--rows N] [--batch-size B ...] [--runs R]

Both sides update every row of a 9-column table (~350-byte rows with a jsonb column) from the
same list of dicts, with the same statement and one transaction per batch of B rows. The raw
loop turns each dict into a tuple and calls executemany; writebehind is timed from the first
put() to the end of flush(). Without --dsn an embedded PostgreSQL is started.

Every run, of either side, starts from the same table state. Before each one the table is
dropped and created again, its old rows loaded by COPY, vacuumed and analyzed, and a CHECKPOINT
taken (where the role may). VACUUM alone between runs is not enough: the space it frees lets
later updates stay on their page (HOT updates: no new index entry), so each run inherits a
table shaped by the runs before it, and the share of HOT updates grows from run to run (1% in
the first run, 11% in the sixth, in one measurement at batch 500): whoever runs later is
favoured. Rebuilt, every run sees the same share. The CHECKPOINT makes every run pay
the same full-page writes, and puts the next checkpoint minutes away rather than inside a run.
Autovacuum is off for the table so that it cannot wake during a run.

The run count is even and the sides alternate who goes first (raw first in runs 1, 3, ...,
writebehind first in runs 2, 4, ...), so neither always has the first slot. After each run
the table must hold every row with its new value: the row count, the sum of a column and an
md5 of the whole table are compared with a reference loaded by COPY; the script exits 1 at
the first run that fails the check. The table printed shows, per batch size, each side's
median rows/s and spread ((max - min) / median), and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import gc
import queue
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.types.json import Jsonb

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.embedded import database

DEFAULT_TABLE = "bench_rows"
DEFAULT_ROWS = 100_000
DEFAULT_RUNS = 6
COLUMNS = ("id", "name", "email", "city", "score", "ratio", "active", "updated", "attrs")
NEW_PREFIX = "user-"  # the value every run writes
OLD_PREFIX = "old-"  # the value loaded before each run: a row still holding it was not written
FLUSH_TIMEOUT = 600.0  # seconds; a worker that stops writing fails the run instead of hanging


class CheckFailed(Exception):
    """A run left the table without every row holding the value written last."""


@dataclass(frozen=True)
class Fingerprint:
    """What the table holds: row count, sum of ``score``, md5 of every row in key order."""

    rows: int
    score_sum: int
    md5: str

    def __str__(self) -> str:
        return f"{self.rows} rows, score sum {self.score_sum}, md5 {self.md5}"


def make_rows(count: int, seed: int, prefix: str, updated: datetime) -> list[dict[str, Any]]:
    """``count`` rows with keys 0..count-1; every column but the key depends on ``seed``."""
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "name": f"{prefix}{i}-{rng.randrange(10**6)}",
            "email": f"{prefix}{i}@example.org",
            "city": rng.choice(["Lisbon", "Oslo", "Quito", "Osaka", "Accra"]),
            "score": rng.randrange(10**6),
            "ratio": rng.random(),
            "active": rng.random() < 0.5,
            "updated": updated,
            "attrs": {
                "plan": rng.choice(["free", "pro", "team"]),
                "tags": [rng.randrange(100) for _ in range(8)],
                "note": "x" * rng.randrange(60, 120),
                "visits": rng.randrange(1000),
            },
        }
        for i in range(count)
    ]


def as_params(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The rows as parameter lists in COLUMNS order, the jsonb column wrapped."""
    as_tuple = itemgetter(*COLUMNS)
    params = []
    for row in rows:
        values = list(as_tuple(row))
        values[-1] = Jsonb(values[-1])
        params.append(values)
    return params


def upsert_statement(table: str) -> sql.Composed:
    updated = [c for c in COLUMNS if c != "id"]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
        sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
            for c in updated
        ),
    )


def rebuild(dsn: str, table: str, rows: Sequence[dict[str, Any]]) -> bool:
    """Drop and create ``table``, COPY ``rows`` in, VACUUM ANALYZE it and take a CHECKPOINT.

    Returns False if the role may not CHECKPOINT (it needs superuser or pg_checkpoint).
    """
    name = sql.Identifier(table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                """CREATE TABLE {} (id bigint PRIMARY KEY, name text, email text, city text,
                score integer, ratio double precision, active boolean, updated timestamptz,
                attrs jsonb) WITH (autovacuum_enabled = off)"""
            ).format(name)
        )
        copy_statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            name, sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )
        with conn.cursor() as cur, cur.copy(copy_statement) as copy:
            for values in as_params(rows):
                copy.write_row(values)
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


def fingerprint(dsn: str, table: str) -> Fingerprint:
    query = sql.SQL(
        """SELECT count(*), coalesce(sum(t.score), 0),
                  md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), ''))
           FROM {} AS t"""
    ).format(sql.Identifier(table))
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(query).fetchone()
    assert found is not None  # an aggregate without GROUP BY returns one row
    return Fingerprint(int(found[0]), int(found[1]), str(found[2]))


def raw_loop(dsn: str, table: str, rows: Sequence[dict[str, Any]], batch_size: int) -> float:
    """The baseline: what an application would write by hand. Returns seconds."""
    query = upsert_statement(table)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            params = as_params(rows[start : start + batch_size])
            with conn.transaction():
                cur.executemany(query, params)
        return time.perf_counter() - started


def writebehind_run(
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    options: dict[str, Any],
) -> float:
    """The same writes through a WriteBehindQueue. Returns seconds."""
    given_up: list[tuple[int, BaseException]] = []

    def on_failure(failed: list[Any], error: BaseException) -> None:
        given_up.append((len(failed), error))

    sink = PostgresUpsert(dsn, table=table, key="id")
    # Metrics on, as by default; a registry of its own so that runs do not add up.
    with WriteBehindQueue(
        sink,
        batch_size=batch_size,
        registry=CollectorRegistry(),
        on_failure=on_failure,
        **options,
    ) as wb:
        start = getattr(wb, "start", None)
        if start is not None:
            start()  # connecting and reading the catalog is not part of the timed work
        put = wb.put
        started = time.perf_counter()
        for row in rows:
            try:
                put(row)
            except queue.Full:  # QueueFull: a put() that does not wait for room
                if not wb.flush(timeout=FLUSH_TIMEOUT):
                    raise CheckFailed("flush() did not finish") from None
                put(row)
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
        elapsed = time.perf_counter() - started
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    if given_up:
        count = sum(n for n, _ in given_up)
        raise CheckFailed(f"{count} rows given up, first error: {given_up[0][1]!r}")
    return elapsed


def positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def spread(values: Sequence[float]) -> float:
    """(max - min) / median, as a fraction."""
    return (max(values) - min(values)) / statistics.median(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Exit status: 0, or 1 if a run left a row without its new value.",
    )
    parser.add_argument("--dsn", help="conninfo; default: an embedded server")
    parser.add_argument(
        "--rows",
        type=positive_int,
        default=DEFAULT_ROWS,
        help=f"rows per run (default {DEFAULT_ROWS:,})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        nargs="+",
        default=[100, 500, 1000],
        metavar="B",
        help="batch sizes to measure (default 100 500 1000)",
    )
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=DEFAULT_RUNS,
        help=f"runs per side and batch size, even (default {DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--table",
        default=DEFAULT_TABLE,
        help=f"table to (re)create and write (default {DEFAULT_TABLE}); it is dropped first",
    )
    parser.add_argument(
        "--maxsize", type=positive_int, help="writebehind queue bound (default: the library's)"
    )
    args = parser.parse_args(argv)
    if args.runs % 2:
        parser.error(
            f"--runs must be even (got {args.runs}): the two sides take turns going first, "
            "and an odd count would give one of them the first slot once more"
        )
    options = {} if args.maxsize is None else {"maxsize": args.maxsize}

    now = datetime.now(timezone.utc)
    new_rows = make_rows(args.rows, seed=1, prefix=NEW_PREFIX, updated=now)
    old_rows = make_rows(args.rows, seed=2, prefix=OLD_PREFIX, updated=now - timedelta(days=1))
    table = args.table

    with database(args.dsn) as dsn:
        sides: dict[str, Callable[[int], float]] = {
            "raw psycopg": lambda batch_size: raw_loop(dsn, table, new_rows, batch_size),
            "writebehind": lambda batch_size: writebehind_run(
                dsn, table, new_rows, batch_size, options
            ),
        }
        names = list(sides)
        # The reference: the new rows loaded by COPY, a path neither side uses.
        rebuild(dsn, table, new_rows)
        expected = fingerprint(dsn, table)
        score_sum = sum(row["score"] for row in new_rows)
        if (expected.rows, expected.score_sum) != (args.rows, score_sum):
            print(f"reference load: {expected}, expected {args.rows} rows", file=sys.stderr)
            return 1

        checkpoints = True
        results: list[tuple[int, list[float], list[float]]] = []
        for batch_size in args.batch_size:
            rates: dict[str, list[float]] = {name: [] for name in names}
            for run in range(args.runs):
                order = names if run % 2 == 0 else names[::-1]
                for name in order:
                    checkpoints = rebuild(dsn, table, old_rows) and checkpoints
                    gc.collect()  # no collection of the last run's garbage inside this one
                    try:
                        seconds = sides[name](batch_size)
                        found = fingerprint(dsn, table)
                        if found != expected:
                            raise CheckFailed(f"the table holds {found}; expected {expected}")
                    except CheckFailed as failure:
                        print(
                            f"FAILED: {name}, batch {batch_size}, run {run + 1}: {failure}",
                            file=sys.stderr,
                        )
                        return 1
                    rates[name].append(args.rows / seconds)
                print(
                    f"batch {batch_size} run {run + 1}/{args.runs}: "
                    + ", ".join(f"{name} {rates[name][-1]:,.0f} rows/s" for name in order),
                    file=sys.stderr,
                )
            results.append((batch_size, rates[names[0]], rates[names[1]]))

    if not checkpoints:
        print("note: the role may not CHECKPOINT; runs started without one", file=sys.stderr)
    print(
        f"{args.rows:,} rows per run, update path; medians of {args.runs} runs per side, "
        "alternating who goes first, table rebuilt before each run; every run checked.\n"
        "spread: (max - min) / median\n"
    )
    print("| batch | raw psycopg rows/s | raw spread | writebehind rows/s | wb spread | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch_size, raw_rates, wb_rates in results:
        raw_median, wb_median = statistics.median(raw_rates), statistics.median(wb_rates)
        print(
            f"| {batch_size} | {raw_median:,.0f} | {spread(raw_rates):.0%} "
            f"| {wb_median:,.0f} | {spread(wb_rates):.0%} | {wb_median / raw_median:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
