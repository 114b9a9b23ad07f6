"""Queue-wide coalescing on a skewed workload: how many rows reach the database per 100 puts
with ``coalesce=False`` and ``coalesce=True``, by replacement and with a merge
(``merge={"views": "add"}``).

The keys of the puts are drawn from a Zipf distribution (s = 1.1 over 10,000 keys, seeded):
key k (from 0) comes with weight 1 / (k + 1) ** 1.1, so a few keys take most of the puts.
Every put is the benchmark's row for its key with ``score`` set to the put's number (which
identifies it) and ``views`` to 1, 2 or 3. One producer thread puts them all, timed from the
first put() to the end of flush(); the rows handed to the sink's ``write()`` and committed are
counted by a PostgresUpsert that counts them (writes that fail are not counted). The peak
depth is ``Metrics.current_queue_depth`` (rows accepted and not yet written) and the peak
room, the rows waiting in the queue (a row combined into another takes none), both sampled
every ``SAMPLE_EVERY`` puts.

Each run starts from an empty table and is checked: every key put holds the last value put
for it (its ``score``), and ``views`` holds the last value put (replacement) or the sum of the
values put (merge); CheckFailed otherwise.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind._sink import Params, ProgressMark
from writebehind.tools.bench.stats import Rates
from writebehind.tools.bench.throughput import Log, turns
from writebehind.tools.bench.workload import (
    KEY,
    NEW_PREFIX,
    CheckFailed,
    create_statement,
    make_rows,
)
from writebehind.tools.bench.writer import FLUSH_TIMEOUT, GivenUp

__all__ = [
    "COALESCE_BATCH",
    "KEYS",
    "SAMPLE_EVERY",
    "ZIPF_S",
    "CoalesceResult",
    "CoalesceSide",
    "CountingUpsert",
    "coalesce_sides",
    "expected_values",
    "measure_coalesce",
    "skewed_puts",
    "zipf_keys",
]

ZIPF_S = 1.1
KEYS = 10_000
SEED = 9
COALESCE_BATCH = 1000
SAMPLE_EVERY = 256
VIEWS = "views"


def zipf_keys(count: int, keys: int = KEYS, s: float = ZIPF_S, seed: int = SEED) -> list[int]:
    """``count`` keys from 0 to ``keys`` - 1, key k drawn with weight 1 / (k + 1) ** s."""
    rng = random.Random(seed)
    weights = [1 / (rank**s) for rank in range(1, keys + 1)]
    return rng.choices(range(keys), cum_weights=_cumulative(weights), k=count)


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def skewed_puts(count: int, updated: Any) -> list[dict[str, Any]]:
    """The rows put, in order: for put n, its key's row with ``score`` n and ``views`` 1 to 3
    (shallow copies: the jsonb value is shared, as it is never changed)."""
    base = make_rows(KEYS, seed=3, prefix=NEW_PREFIX, updated=updated)
    return [{**base[key], "score": n, VIEWS: 1 + n % 3} for n, key in enumerate(zipf_keys(count))]


def expected_values(puts: Sequence[dict[str, Any]], merge: bool) -> dict[int, tuple[int, int]]:
    """key -> (score, views) the table must hold after ``puts``: the last score put, and the
    last views put or (``merge``) their sum."""
    expected: dict[int, tuple[int, int]] = {}
    for row in puts:
        key = row[KEY]
        views = row[VIEWS]
        if merge and key in expected:
            views += expected[key][1]
        expected[key] = (row["score"], views)
    return expected


class CountingUpsert(PostgresUpsert):
    """A PostgresUpsert that counts the rows of the writes that succeed (``rows_written``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows_written = 0
        self.writes = 0
        self._count_lock = threading.Lock()

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        super().write(rows, progress)
        with self._count_lock:
            self.rows_written += len(rows)
            self.writes += 1


@dataclass(frozen=True)
class CoalesceSide:
    """One contender: replacement or merge, with or without queue-wide coalescing."""

    label: str
    coalesce: bool
    merge: bool


def coalesce_sides() -> list[CoalesceSide]:
    """Replacement and merge, each with coalesce=False then True."""
    return [
        CoalesceSide(
            f"{'merge views add' if merge else 'replace'}, coalesce={coalesce}", coalesce, merge
        )
        for merge in (False, True)
        for coalesce in (False, True)
    ]


@dataclass(frozen=True)
class CoalesceRun:
    """What one run did."""

    seconds: float
    rows_written: int
    writes: int
    peak_depth: int
    peak_waiting: int


@dataclass
class CoalesceResult:
    """Every side's runs."""

    puts: int
    distinct_keys: int
    batch_size: int
    maxsize: int
    runs: dict[str, list[CoalesceRun]] = field(default_factory=dict)

    def rates(self, label: str) -> Rates:
        return Rates(label, [self.puts / run.seconds for run in self.runs[label]])


def recreate(dsn: str, table: str) -> None:
    """The benchmark's table, plus ``views bigint`` (no default: written by default), empty."""
    name = sql.Identifier(table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(create_statement(table))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint").format(name, sql.Identifier(VIEWS))
        )


def drop(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def check_table(dsn: str, table: str, expected: dict[int, tuple[int, int]]) -> None:
    """CheckFailed unless ``table`` holds exactly ``expected`` (key -> score, views)."""
    query = sql.SQL("SELECT {}, score, {} FROM {}").format(
        sql.Identifier(KEY), sql.Identifier(VIEWS), sql.Identifier(table)
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = {int(key): (score, views) for key, score, views in conn.execute(query)}
    if found == expected:
        return
    wrong = sorted(
        key for key in expected.keys() | found.keys() if found.get(key) != expected.get(key)
    )
    key = wrong[0]
    raise CheckFailed(
        f"{len(wrong)} of {len(expected)} keys wrong; key {key}: the table holds "
        f"(score, views) {found.get(key)}, expected {expected.get(key)}"
    )


def coalesce_run(
    dsn: str,
    table: str,
    puts: Sequence[dict[str, Any]],
    side: CoalesceSide,
    *,
    batch_size: int,
    maxsize: int,
) -> CoalesceRun:
    """Put ``puts`` into a queue over a counting sink and flush it; CheckFailed if a row is
    given up or flush() does not finish within FLUSH_TIMEOUT."""
    given_up = GivenUp()
    sink = CountingUpsert(dsn, table, KEY, merge={VIEWS: "add"} if side.merge else None)
    peak_depth = peak_waiting = 0
    with WriteBehindQueue(
        sink,
        batch_size=batch_size,
        maxsize=maxsize,
        coalesce=side.coalesce,
        registry=CollectorRegistry(),
        on_failure=given_up,
    ) as wb:
        wb.start()
        put, metrics, waiting = wb.put, wb.metrics, _waiting(wb)
        started = time.perf_counter()
        for n, row in enumerate(puts):
            put(row)
            if n % SAMPLE_EVERY == 0:
                peak_depth = max(peak_depth, metrics().current_queue_depth)
                peak_waiting = max(peak_waiting, waiting())
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
        seconds = time.perf_counter() - started
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    given_up.check()
    return CoalesceRun(seconds, sink.rows_written, sink.writes, peak_depth, peak_waiting)


def _waiting(wb: WriteBehindQueue) -> Any:
    # The rows waiting in the queue, a combined row counting once: the room they take. Not a
    # public number (Metrics counts rows accepted and not written, combined ones included).
    return wb._buffer.qsize


def measure_coalesce(
    dsn: str,
    table: str,
    puts: Sequence[dict[str, Any]],
    sides: Sequence[CoalesceSide],
    *,
    batch_size: int,
    maxsize: int,
    runs: int,
    log: Log,
) -> CoalesceResult:
    """Run every side ``runs`` times, taking turns, each on an empty ``table`` (dropped at
    the end), every run checked; CheckFailed naming the side and run otherwise."""
    expected = {merge: expected_values(puts, merge) for merge in (False, True)}
    result = CoalesceResult(len(puts), len(expected[False]), batch_size, maxsize)
    try:
        for run in range(runs):
            order = turns(sides, run)
            for side in order:
                recreate(dsn, table)
                gc.collect()
                try:
                    done = coalesce_run(
                        dsn, table, puts, side, batch_size=batch_size, maxsize=maxsize
                    )
                    check_table(dsn, table, expected[side.merge])
                except CheckFailed as failure:
                    raise CheckFailed(f"{side.label}, run {run + 1}: {failure}") from failure
                result.runs.setdefault(side.label, []).append(done)
            log(
                f"coalesce, run {run + 1}/{runs}: "
                + ", ".join(
                    f"{side.label} {result.runs[side.label][-1].rows_written:,} rows written"
                    for side in order
                )
            )
    finally:
        drop(dsn, table)
    return result
