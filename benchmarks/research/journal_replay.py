"""The durable journal section's last two parts: replay of a dead process's journal, and
start-up with a large one (see ``benchmarks.research.journal``)."""

from __future__ import annotations

import gc
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.journal import Journal
from writebehind.journal.keeper import decode_record, encode_record
from writebehind.journal.segments import (
    DEFAULT_SEGMENT_BYTES,
    SegmentReader,
    SegmentWriter,
)
from writebehind.tools.bench.raw import raw_copy
from writebehind.tools.bench.stats import Rates
from writebehind.tools.bench.throughput import RAW_COPY, Log, turns
from writebehind.tools.bench.workload import KEY, CheckFailed, Workload
from writebehind.tools.bench.writer import FLUSH_TIMEOUT, GivenUp, make_sink, pool_kept

from .coalesce import zipf_keys
from .journal_runs import (
    APPEND_CHUNK,
    DISTINCT,
    QUEUE,
    REPEATED,
    REPEATED_KEYS,
    REPLAY,
    REPLAY_BATCH,
    JournalResult,
    Startup,
    fresh_directory,
    repeated_keys,
)

# -- 3. replay -----------------------------------------------------------------------------


def build_journal(
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    root: Path,
    *,
    min_bytes: int = 0,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> tuple[Path, int]:
    """Write the journal a process of queue ``QUEUE`` (one writer, on ``table``) would leave
    with ``rows`` put and none written: their records, converted by the sink as put() converts
    them, in segment files under ``root`` whose lock is free (the process is gone). With
    ``min_bytes``, the records of ``rows`` are appended again and again until the segments
    hold that many bytes. Returns the instance directory and the number of records."""
    sink = PostgresUpsert(dsn, table, KEY)
    sink.open()
    try:
        payloads = []
        for row in rows:
            key, params = sink.prepare(row)
            payloads.append(encode_record(0, key, params, row))  # lane 0: one writer
    finally:
        sink.close()
    size = sum(len(payload) for payload in payloads)
    rounds = max(1, -(-min_bytes // max(1, size)))  # ceiling: enough copies for min_bytes
    writer = SegmentWriter(
        root,
        QUEUE,
        segment_bytes=segment_bytes,
        max_bytes=2 * (rounds * size + segment_bytes) + 4 * segment_bytes,
    )
    records = 0
    try:
        while records == 0 or writer.disk_bytes < min_bytes:
            for start in range(0, len(payloads), APPEND_CHUNK):
                records += len(writer.append(payloads[start : start + APPEND_CHUNK]))
    finally:
        writer.close()  # the directory stays, unlocked: an orphan for the next queue
    return writer.path, records


class _FirstWrite(PostgresUpsert):
    """A PostgresUpsert that records when its first write returned (committed), and commits
    nothing after it: a later write waits for ``done`` and fails, so that the journal is never
    replayed whole (and removed) before the run measuring it ends, however small it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.committed = threading.Event()
        self.done = threading.Event()
        self.first_at = 0.0

    def write(self, rows: Sequence[Any], *args: Any, **kwargs: Any) -> None:
        if self.committed.is_set():
            self.done.wait(FLUSH_TIMEOUT)
            raise psycopg.OperationalError("bench: the start-up is measured; nothing more")
        super().write(rows, *args, **kwargs)
        self.first_at = time.perf_counter()
        self.committed.set()


def replay_run(dsn: str, table: str, root: Path, rows: int, *, batch_size: int) -> float:
    """Replay the journal of ``rows`` rows left under ``root`` with a new queue: seconds from
    start() to the return of flush(). CheckFailed if it replays another number of rows, gives
    rows up or does not finish."""
    forget_progress(dsn)  # a copy of the same journal each run: nothing of it written yet
    given_up = GivenUp()
    wb = WriteBehindQueue(
        make_sink(dsn, table, None),
        batch_size=batch_size,
        registry=CollectorRegistry(),
        on_failure=given_up,
        name=QUEUE,
        journal=Journal(root),
    )
    try:
        started = time.perf_counter()
        wb.start()
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
        seconds = time.perf_counter() - started
        replayed = wb.metrics().total_replayed
    finally:
        wb.close(timeout=FLUSH_TIMEOUT)
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    given_up.check()
    if replayed != rows:
        raise CheckFailed(f"{replayed:,} rows replayed of a journal of {rows:,}")
    return seconds


def forget_progress(dsn: str) -> None:
    """Delete the progress rows of this section's queue (the table is made by its first
    queue): the replayed journal's, which stay after a replay."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('writebehind_progress')").fetchone()
        if found is not None and found[0] is not None:
            conn.execute(
                "DELETE FROM writebehind_progress WHERE starts_with(journal, %s)", (f"{QUEUE}/",)
            )


def raw_copy_last_wins(
    dsn: str, table: str, rows: Sequence[dict[str, Any]], batch_size: int
) -> float:
    """The raw COPY loop (see ``raw.raw_copy``), each batch's rows of one key first combined
    into the last of them, inside the timing. Returns seconds."""
    return raw_copy(dsn, table, rows, batch_size, each_batch=_last_of_each_key)


def _last_of_each_key(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({row[KEY]: row for row in rows}.values())


def _scores(dsn: str, table: str) -> dict[int, int]:
    """key -> score of the rows holding a new value (written by a run)."""
    query = sql.SQL("SELECT {}, score FROM {} WHERE name LIKE 'user-%'").format(
        sql.Identifier(KEY), sql.Identifier(table)
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {int(key): int(score) for key, score in conn.execute(query)}


def _check_scores(dsn: str, table: str, expected: dict[int, int]) -> None:
    found = _scores(dsn, table)
    if found != expected:
        wrong = sorted(k for k in expected.keys() | found.keys() if found.get(k) != expected.get(k))
        key = wrong[0]
        raise CheckFailed(
            f"{len(wrong)} of {len(expected)} keys wrong; key {key} holds score "
            f"{found.get(key)}, expected {expected.get(key)}"
        )


def measure_replay(
    dsn: str,
    table: str,
    replay_rows: int,
    root: Path,
    runs: int,
    log: Log,
    result: JournalResult,
) -> None:
    result.replay_rows = replay_rows
    keys = repeated_keys(replay_rows)
    with Workload(dsn, f"{table}_replay", replay_rows, keep_table=False) as distinct:
        result.keys[DISTINCT] = replay_rows
        _replay_sides(distinct, DISTINCT, distinct.rows, distinct.check, root, runs, log, result)
    with Workload(dsn, f"{table}_repeated", keys, keep_table=False) as repeated:
        base = repeated.rows
        puts = [{**base[key], "score": n} for n, key in enumerate(zipf_keys(replay_rows, keys))]
        expected = {row[KEY]: row["score"] for row in puts}
        result.keys[REPEATED] = len(expected)

        def check() -> None:
            _check_scores(dsn, repeated.table, expected)

        _replay_sides(repeated, REPEATED, puts, check, root, runs, log, result)


def _replay_sides(
    workload: Workload,
    keys: str,
    rows: Sequence[dict[str, Any]],
    check: Callable[[], None],
    root: Path,
    runs: int,
    log: Log,
    result: JournalResult,
) -> None:
    dsn, table = workload.dsn, workload.table
    template = root / f"template-{keys.split()[0]}"
    template.mkdir()
    _, records = build_journal(dsn, table, rows, template)
    if records != len(rows):
        raise CheckFailed(f"the {keys} journal holds {records:,} records of {len(rows):,}")
    raw = raw_copy if keys == DISTINCT else raw_copy_last_wins

    def replay() -> float:
        with fresh_directory(root) as where:
            shutil.copytree(template, where, dirs_exist_ok=True)  # a fresh orphan each run
            return replay_run(dsn, table, where, len(rows), batch_size=REPLAY_BATCH)

    sides: list[tuple[str, Callable[[], float]]] = [
        (RAW_COPY, lambda: raw(dsn, table, rows, REPLAY_BATCH)),
        (REPLAY, replay),
    ]
    rates = result.replay[keys] = {label: Rates(label) for label, _ in sides}
    try:
        with pool_kept(dsn, table):  # the queue's pool warm, as the raw loop connects untimed
            for run in range(runs):
                order = turns(sides, run)
                for label, side in order:
                    workload.prepare("update")
                    gc.collect()
                    try:
                        seconds = side()
                        check()
                    except CheckFailed as failure:
                        raise CheckFailed(
                            f"journal replay, {keys}, {label}, run {run + 1}: {failure}"
                        ) from failure
                    rates[label].values.append(len(rows) / seconds)
                log(
                    f"journal replay, {keys}, run {run + 1}/{runs}: "
                    + ", ".join(f"{label} {rates[label].values[-1]:,.0f}" for label, _ in order)
                    + " rows/s"
                )
    finally:
        shutil.rmtree(template, ignore_errors=True)


# -- 4. start-up with a large journal ------------------------------------------------------


def evict(directory: Path) -> None:
    """Write the files of ``directory`` to disk and drop them from the page cache."""
    for path in directory.iterdir():
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def startup_run(dsn: str, table: str, root: Path, *, batch_size: int) -> float:
    """Seconds from start() of a new queue until the first batch replayed from the journal
    under ``root`` is committed; the queue is then abandoned (its rows stay in the journal,
    which is left for the next run)."""
    forget_progress(dsn)  # each run replays the same journal from its start
    sink = _FirstWrite(dsn, table, KEY)
    wb = WriteBehindQueue(
        sink, batch_size=batch_size, registry=CollectorRegistry(), name=QUEUE, journal=Journal(root)
    )
    try:
        started = time.perf_counter()
        wb.start()
        committed = sink.committed.wait(FLUSH_TIMEOUT)
    finally:
        wb.abandon()
        sink.done.set()
        wb.close(timeout=FLUSH_TIMEOUT)
    if not committed:
        raise CheckFailed(f"no replayed batch committed within {FLUSH_TIMEOUT:.0f}s")
    return sink.first_at - started


def decode_all(directory: Path) -> tuple[float, int]:
    """Seconds to read and decode every record of the journal in ``directory`` (nothing
    repaired, no database), and the number of records."""
    started = time.perf_counter()
    count = 0
    for record in SegmentReader(directory, repair=False).records():
        decode_record(record.payload)
        count += 1
    return time.perf_counter() - started, count


def measure_startup(
    dsn: str, table: str, gib: float, root: Path, runs: int, log: Log, result: JournalResult
) -> None:
    result.gib = gib
    wanted = int(gib * 2**30)
    free = shutil.disk_usage(root).free
    if free < 2 * wanted:
        raise CheckFailed(
            f"--journal-gib {gib:g}: {free / 2**30:.1f} GiB free on {root}, want twice as much"
        )
    with Workload(dsn, f"{table}_large", REPEATED_KEYS, keep_table=False) as workload:
        where = root / "large"
        where.mkdir()
        built = time.perf_counter()
        directory, records = build_journal(
            dsn, workload.table, workload.rows, where, min_bytes=wanted
        )
        segments = sorted(directory.glob("*.seg"))
        startup = result.startup = Startup(
            sum(path.stat().st_size for path in segments),
            records,
            len(segments),
            time.perf_counter() - built,
        )
        log(
            f"journal start-up: {startup.bytes / 2**30:.2f} GiB, {records:,} records in "
            f"{len(segments)} segments written in {startup.build_seconds:.0f} s"
        )
        workload.prepare("update")
        try:
            for run in range(runs):
                evict(directory)
                seconds = startup_run(dsn, workload.table, where, batch_size=REPLAY_BATCH)
                startup.first_commit.append(seconds)
                evict(directory)
                gc.collect()
                decoded, count = decode_all(directory)
                if count != records:
                    raise CheckFailed(
                        f"journal start-up, run {run + 1}: {count:,} records read of {records:,}"
                    )
                startup.decode.append(decoded)
                log(
                    f"journal start-up, run {run + 1}/{runs}: first batch committed after "
                    f"{seconds:.2f} s; every record read and decoded in {decoded:.1f} s"
                )
        finally:
            shutil.rmtree(where, ignore_errors=True)
