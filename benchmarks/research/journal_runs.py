"""The durable journal section's first two parts: throughput and put() latency with a journal
against without (see ``benchmarks.research.journal``), and what the parts share: their
constants, sides and results."""

from __future__ import annotations

import gc
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from writebehind import WriteBehindQueue
from writebehind.journal import Journal
from writebehind.journal.segments import (
    SyncMode,
)
from writebehind.tools.bench.raw import raw_copy, raw_executemany
from writebehind.tools.bench.stats import Rates, percentile
from writebehind.tools.bench.throughput import RAW_COPY, RAW_EXECUTEMANY, Log, turns
from writebehind.tools.bench.workload import CheckFailed, Workload
from writebehind.tools.bench.writer import FLUSH_TIMEOUT, GivenUp, make_sink

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
APPEND_CHUNK = 1000  # records per append when writing a journal directly: segments fill up


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


def measure_journal_throughput(
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
            with fresh_directory(root) as where:
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
def fresh_directory(root: Path) -> Iterator[Path]:
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


def measure_journal_latency(
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
            with fresh_directory(root) as where:
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
