"""The durable journal's costs: throughput and put() latency with a journal against without,
how fast a dead process's journal is replayed, and how soon a large one starts being written.

Four parts, every side of a part run ``runs`` times, taking turns (see ``turns``), every run
checked (CheckFailed naming the side and run otherwise):

1. **Throughput**, update path, batch ``JOURNAL_BATCH``, the default method: one producer
   thread puts every row, timed from the first put() to the end of flush() (as in the
   throughput section), without a journal and with ``sync="process"``, ``"interval"`` and
   ``"always"``; ``"always"`` and no journal also with put_many() of ``GROUP`` rows (group
   commit is what ``"always"`` is for); beside the raw psycopg loops.
2. **put() latency** without a journal and with ``sync="process"``: one producer puts at a
   steady rate, ``PACE`` of the lower of the two sides' throughput just measured (below what
   either can take, so that no put() waits for room: backpressure is not what is measured),
   each put() timed with perf_counter_ns.
3. **Replay**: a journal of ``replay_rows`` rows of the update path, written as a process
   of the queue would leave it (records of rows converted by ``PostgresUpsert.prepare``, in
   segment files whose lock is free), replayed by a new queue of that name: timed from
   start() to the return of flush(). Distinct keys (every row a key of its own) and repeated
   keys (keys drawn from a Zipf distribution, s = 1.1, over ``repeated_keys(rows)`` keys: a
   batch combines a key's rows into its last). Against the raw COPY loop writing the same rows
   at the same batch size (for repeated keys, each batch's rows of one key combined into the
   last first, inside the timing: a batch cannot carry a key twice).
4. **Start-up with a large journal** (``--journal-gib``, 1 GiB by default): seconds from
   start() until the first replayed batch is committed (the sink's first write returns), with
   the journal's files out of the page cache (``posix_fadvise(DONTNEED)``, as after a reboot);
   and the seconds to read and decode every record of it without the database
   (``SegmentReader`` and ``decode_record``), also from a cold cache.

Journals are made under one temporary directory (``tempfile``: the disk the tests use), named
in the tables with its file system (``df -T``), and deleted at the end.
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry
from psycopg import sql

from ..journal import Journal
from ..journal.keeper import decode_record, encode_record
from ..journal.segments import DEFAULT_SEGMENT_BYTES, SegmentReader, SegmentWriter, SyncMode
from ..postgres.upsert import PostgresUpsert
from ..queue.core import WriteBehindQueue
from .coalesce import zipf_keys
from .raw import raw_copy, raw_executemany
from .report import markdown_table, rate, ratio
from .stats import Rates, percentile, spread
from .targets import Target, ratio_target
from .throughput import RAW_COPY, RAW_EXECUTEMANY, Log, turns
from .workload import KEY, CheckFailed, Workload
from .writer import FLUSH_TIMEOUT, GivenUp, make_sink, pool_kept

__all__ = [
    "GROUP",
    "JOURNAL_BATCH",
    "JOURNAL_GIB",
    "PACE",
    "REPLAY_BATCH",
    "REPLAY_ROWS",
    "JournalResult",
    "LatencyRun",
    "Startup",
    "build_journal",
    "disk_of",
    "journal_report",
    "journal_targets",
    "measure_journal",
    "raw_copy_last_wins",
    "repeated_keys",
]

JOURNAL_BATCH = 1000
"""The batch size of the throughput and latency parts (the secondary batch of the others)."""
REPLAY_BATCH = 5000
"""The batch size of replay and start-up: the raw COPY loop's fastest in the throughput
section, and a replay has every row at hand."""
REPLAY_ROWS = 200_000
JOURNAL_GIB = 1.0
GROUP = 100
"""Rows per put_many() of the group sides."""
PACE = 0.6
"""The latency part puts at this share of the throughput measured just before, the lower of
no journal and ``sync="process"``."""
QUEUE = "writebehind_bench_journal"
"""The name of every journaled queue: the directory its journals go to."""
REPEATED_KEYS = 10_000
NO_JOURNAL = "no journal"
PROCESS = 'sync="process"'
DISTINCT = "distinct keys"
REPEATED = "repeated keys"
REPLAY = "replay (writebehind)"
_APPEND_CHUNK = 1000  # records per append when writing a journal directly: segments fill up


def repeated_keys(rows: int) -> int:
    """The keys of the repeated-keys journal: ``REPEATED_KEYS``, fewer for a small journal
    (about ten puts per key at least)."""
    return max(1, min(REPEATED_KEYS, rows // 10))


@dataclass(frozen=True)
class _Mode:
    """One throughput side of writebehind: its journal's sync mode (None: none) and how many
    rows each put call carries."""

    label: str
    sync: SyncMode | None
    group: int = 1


MODES = (
    _Mode(NO_JOURNAL, None),
    _Mode(PROCESS, "process"),
    _Mode('sync="interval"', "interval"),
    _Mode('sync="always"', "always"),
    _Mode(f"no journal, put_many of {GROUP}", None, GROUP),
    _Mode(f'sync="always", put_many of {GROUP}', "always", GROUP),
)


@dataclass(frozen=True)
class LatencyRun:
    """One paced run: put() percentiles and maximum (µs), and the rate the puts kept."""

    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    puts_per_second: float


@dataclass
class Startup:
    """The large journal and what reading it took."""

    bytes: int
    records: int
    segments: int
    build_seconds: float
    first_commit: list[float] = field(default_factory=list)
    """Seconds from start() to the first replayed batch committed, per run."""
    decode: list[float] = field(default_factory=list)
    """Seconds to read and decode every record without the database, per run."""


@dataclass
class JournalResult:
    """Every part's runs."""

    rows: int
    runs: int
    disk: str
    throughput: dict[str, Rates] = field(default_factory=dict)
    pace: float = 0.0
    """The put rate of the latency part (puts/s)."""
    latency: dict[str, list[LatencyRun]] = field(default_factory=dict)
    replay_rows: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    """Distinct keys of each replayed journal."""
    replay: dict[str, dict[str, Rates]] = field(default_factory=dict)
    """Key set -> side -> rows/s."""
    startup: Startup | None = None
    gib: float = 0.0


def disk_of(path: Path) -> str:
    """The device, file system type and mount point of ``path`` (``df -T``)."""
    try:
        found = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, timeout=30, check=True
        )
        fields = found.stdout.splitlines()[-1].split()
        return f"{fields[0]} ({fields[1]}, mounted on {fields[-1]})"
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown (df -T failed)"


# -- 1. throughput -------------------------------------------------------------------------


def journal_run(
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    mode: _Mode,
    root: Path,
    *,
    batch_size: int,
) -> float:
    """Put ``rows`` (one by one, or by put_many of ``mode.group``) into a queue with
    ``mode``'s journal under ``root``, and flush it: seconds from the first put to the end of
    flush(). CheckFailed if a row is given up or flush() does not finish."""
    given_up = GivenUp()
    journal = None if mode.sync is None else Journal(root, sync=mode.sync)
    wb = WriteBehindQueue(
        make_sink(dsn, table, None),
        batch_size=batch_size,
        registry=CollectorRegistry(),
        on_failure=given_up,
        name=QUEUE,
        journal=journal,
    )
    try:
        wb.start()  # connecting, reading the catalog and making the journal are not timed
        group = mode.group
        started = time.perf_counter()
        if group == 1:
            put = wb.put
            for row in rows:
                put(row)
        else:
            put_many = wb.put_many
            for start in range(0, len(rows), group):
                put_many(rows[start : start + group])
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
        seconds = time.perf_counter() - started
    finally:
        wb.close(timeout=FLUSH_TIMEOUT)
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    given_up.check()
    return seconds


def _measure_throughput(
    workload: Workload, root: Path, runs: int, log: Log, result: JournalResult
) -> None:
    dsn, table, rows = workload.dsn, workload.table, workload.rows
    Run = Callable[[Path], float]

    def raw(function: Callable[..., float]) -> Run:
        return lambda _root: function(dsn, table, rows, JOURNAL_BATCH)

    def queue(mode: _Mode) -> Run:
        return lambda where: journal_run(dsn, table, rows, mode, where, batch_size=JOURNAL_BATCH)

    sides: list[tuple[str, Run]] = [
        (RAW_EXECUTEMANY, raw(raw_executemany)),
        (RAW_COPY, raw(raw_copy)),
        *((mode.label, queue(mode)) for mode in MODES),
    ]
    result.throughput = {label: Rates(label) for label, _run in sides}
    for run in range(runs):
        order = turns(sides, run)
        for label, side in order:
            workload.prepare("update")
            gc.collect()
            with _fresh(root) as where:
                try:
                    seconds = side(where)
                    workload.check()
                except CheckFailed as failure:
                    raise CheckFailed(
                        f"journal throughput, {label}, run {run + 1}: {failure}"
                    ) from failure
            result.throughput[label].values.append(len(rows) / seconds)
        log(
            f"journal throughput, run {run + 1}/{runs}: "
            + ", ".join(f"{label} {result.throughput[label].values[-1]:,.0f}" for label, _ in order)
            + " rows/s"
        )


@contextmanager
def _fresh(root: Path) -> Iterator[Path]:
    """A new empty directory under ``root`` for one run's journal, deleted after it."""
    where = Path(tempfile.mkdtemp(dir=root))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


# -- 2. put() latency ----------------------------------------------------------------------


def paced_run(
    dsn: str,
    table: str,
    rows: Sequence[dict[str, Any]],
    sync: SyncMode | None,
    root: Path,
    *,
    pace: float,
    batch_size: int,
) -> LatencyRun:
    """Put ``rows`` at ``pace`` puts per second, each put() timed; flush. When the producer is
    ahead of its schedule it sleeps (which lets the writer have the GIL); when behind (a sleep
    overshoots) it puts at once until it has caught up."""
    given_up = GivenUp()
    journal = None if sync is None else Journal(root, sync=sync)
    clock = time.perf_counter_ns
    latencies = [0] * len(rows)  # filled in place: no list growth inside the timed loop
    interval_ns = 1e9 / pace
    wb = WriteBehindQueue(
        make_sink(dsn, table, None),
        batch_size=batch_size,
        maxsize=max(10_000, 2 * batch_size),
        registry=CollectorRegistry(),
        on_failure=given_up,
        name=QUEUE,
        journal=journal,
    )
    try:
        wb.start()
        put, sleep = wb.put, time.sleep
        started = clock()
        for index, row in enumerate(rows):
            ahead = started + index * interval_ns - clock()
            if ahead > 0:
                sleep(ahead / 1e9)
            before = clock()
            put(row)
            latencies[index] = clock() - before
        put_seconds = (clock() - started) / 1e9
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
    finally:
        wb.close(timeout=FLUSH_TIMEOUT)
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    given_up.check()
    latencies.sort()
    return LatencyRun(
        percentile(latencies, 0.50) / 1000,
        percentile(latencies, 0.99) / 1000,
        percentile(latencies, 0.999) / 1000,
        (latencies[-1] if latencies else 0) / 1000,
        len(rows) / put_seconds if put_seconds else 0.0,
    )


def _measure_latency(
    workload: Workload, root: Path, runs: int, log: Log, result: JournalResult
) -> None:
    # Below what either side can take: the journal's throughput is the lower one.
    result.pace = PACE * min(result.throughput[label].median for label in (NO_JOURNAL, PROCESS))
    sides: list[tuple[str, SyncMode | None]] = [(NO_JOURNAL, None), (PROCESS, "process")]
    result.latency = {label: [] for label, _sync in sides}
    for run in range(runs):
        order = turns(sides, run)
        for label, sync in order:
            workload.prepare("update")
            gc.collect()
            with _fresh(root) as where:
                try:
                    done = paced_run(
                        workload.dsn,
                        workload.table,
                        workload.rows,
                        sync,
                        where,
                        pace=result.pace,
                        batch_size=JOURNAL_BATCH,
                    )
                    workload.check()
                except CheckFailed as failure:
                    raise CheckFailed(
                        f"journal put() latency, {label}, run {run + 1}: {failure}"
                    ) from failure
            result.latency[label].append(done)
        log(
            f"journal put() latency at {result.pace:,.0f} puts/s, run {run + 1}/{runs}: "
            + ", ".join(
                f"{label} p99 {result.latency[label][-1].p99_us:.1f} µs" for label, _ in order
            )
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
            for start in range(0, len(payloads), _APPEND_CHUNK):
                records += len(writer.append(payloads[start : start + _APPEND_CHUNK]))
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


def _measure_replay(
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
        with _fresh(root) as where:
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


def _measure_startup(
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


# -- the section ---------------------------------------------------------------------------


def measure_journal(
    workload: Workload,
    *,
    replay_rows: int,
    gib: float,
    runs: int,
    log: Log,
    root: Path | None = None,
) -> JournalResult:
    """Every part, its journals under a temporary directory (in ``root`` if given) deleted at
    the end; ``workload``'s table is the throughput and latency parts' (the others make
    tables of their own beside it, dropped at the end)."""
    where = Path(tempfile.mkdtemp(prefix="writebehind-bench-journal-", dir=root))
    try:
        result = JournalResult(len(workload.rows), runs, disk_of(where))
        with pool_kept(workload.dsn, workload.table):
            _measure_throughput(workload, where, runs, log, result)
            _measure_latency(workload, where, runs, log, result)
        _measure_replay(workload.dsn, workload.table, replay_rows, where, runs, log, result)
        _measure_startup(workload.dsn, workload.table, gib, where, runs, log, result)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return result


def journal_targets(result: JournalResult) -> list[Target]:
    """The issue's targets for the journal, judged on ``result``."""
    found = [
        ratio_target(
            f'update path, batch {JOURNAL_BATCH}: sync="process" against no journal',
            result.throughput[PROCESS].ratio(result.throughput[NO_JOURNAL]),
            0.8,
        )
    ]
    runs = result.latency.get(PROCESS)
    what = 'put() p99 ≤ 100 µs with sync="process"'
    if runs:
        p99 = statistics.median(run.p99_us for run in runs)
        found.append(Target(what, f"{p99:.1f} µs", p99 <= 100))
    else:
        found.append(Target(what, "not measured", None))
    for keys, rates in result.replay.items():
        median = rates[REPLAY].median
        found.append(
            Target(
                f"replay ({keys}, update path) ≥ 100,000 rows/s",
                f"{median:,.0f} rows/s",
                median >= 100_000,
            )
        )
    startup = result.startup
    what = f"start-up with a {result.gib:g} GiB journal: first replayed batch committed < 10 s"
    if startup is not None and startup.first_commit:
        seconds = statistics.median(startup.first_commit)
        found.append(Target(what, f"{seconds:.2f} s", seconds < 10))
    else:
        found.append(Target(what, "not measured", None))
    return found


def journal_report(result: JournalResult) -> str:
    """The section's tables (Markdown), each under a line that says what was measured (the
    targets are judged with the other sections', by ``journal_targets``)."""
    parts = [
        f"Journals on {result.disk}. Medians of {result.runs} run(s) per side, taking turns; "
        "spread: (max - min) / median.",
        "",
        f"Throughput (update path, batch {JOURNAL_BATCH:,}, {result.rows:,} rows, one "
        "producer, first put() to the end of flush()):",
        "",
        _throughput_table(result),
        "",
        f"put() at a steady {result.pace:,.0f} puts/s ({PACE:.0%} of the lower throughput "
        f'above, no journal or sync="process"; batch {JOURNAL_BATCH:,}, {result.rows:,} '
        "rows), µs (max: the largest of the runs):",
        "",
        _latency_table(result),
        "",
        f"Replay of a journal of {result.replay_rows:,} rows (update path, batch "
        f"{REPLAY_BATCH:,}), start() to the end of flush(), against the raw COPY loop "
        "writing the same rows:",
        "",
        _replay_table(result),
    ]
    startup = result.startup
    if startup is not None:
        parts += [
            "",
            f"Start-up with a journal of {startup.bytes / 2**30:.2f} GiB ({startup.records:,} "
            f"records, {startup.segments} segments; batch {REPLAY_BATCH:,}), its files out of "
            "the page cache before each run:",
            "",
            _startup_table(startup),
        ]
    return "\n".join(parts)


def _throughput_table(result: JournalResult) -> str:
    rates = result.throughput
    none, copy = rates[NO_JOURNAL], rates[RAW_COPY]
    body = [
        [label, rate(r.median), f"{r.spread:.0%}", ratio(r.ratio(none)), ratio(r.ratio(copy))]
        for label, r in rates.items()
    ]
    return markdown_table(["side", "rows/s", "spread", "× no journal", "× raw COPY"], body)


def _latency_table(result: JournalResult) -> str:
    body = []
    for label, runs in result.latency.items():
        body.append(
            [
                label,
                rate(statistics.median(run.puts_per_second for run in runs)),
                f"{statistics.median(run.p50_us for run in runs):.1f}",
                f"{statistics.median(run.p99_us for run in runs):.1f}",
                f"{statistics.median(run.p999_us for run in runs):,.1f}",
                f"{max(run.max_us for run in runs):,.0f}",
            ]
        )
    headers = ["side", "puts/s kept", "p50 µs", "p99 µs", "p99.9 µs", "max µs"]
    return markdown_table(headers, body)


def _replay_table(result: JournalResult) -> str:
    body = []
    for keys, rates in result.replay.items():
        copy = rates[RAW_COPY]
        for label, r in rates.items():
            body.append(
                [
                    f"{keys} ({result.keys[keys]:,} keys)",
                    label,
                    rate(r.median),
                    f"{r.spread:.0%}",
                    ratio(r.ratio(copy)),
                ]
            )
    return markdown_table(["journal", "side", "rows/s", "spread", "× raw COPY"], body, left=2)


def _startup_table(startup: Startup) -> str:
    first, decode = startup.first_commit, startup.decode
    seconds = statistics.median(decode)
    body = [
        [
            "start() to the first replayed batch committed",
            f"{statistics.median(first):.2f}",
            f"{spread(first):.0%}",
            "—",
            "—",
        ],
        [
            "read and decode every record (no database)",
            f"{seconds:.2f}",
            f"{spread(decode):.0%}",
            rate(startup.records / seconds) if seconds else "—",
            f"{startup.bytes / 2**20 / seconds:,.0f}" if seconds else "—",
        ],
    ]
    return markdown_table(["what", "seconds", "spread", "records/s", "MiB/s"], body)
