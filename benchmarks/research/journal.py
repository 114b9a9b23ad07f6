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

import shutil
import statistics
import tempfile
from pathlib import Path

from writebehind.tools.bench.report import markdown_table, rate, ratio
from writebehind.tools.bench.stats import spread
from writebehind.tools.bench.targets import Target, ratio_target
from writebehind.tools.bench.throughput import RAW_COPY, Log
from writebehind.tools.bench.workload import Workload
from writebehind.tools.bench.writer import pool_kept

from .journal_replay import build_journal, measure_replay, measure_startup, raw_copy_last_wins
from .journal_runs import (
    GROUP,
    JOURNAL_BATCH,
    JOURNAL_GIB,
    NO_JOURNAL,
    PACE,
    PROCESS,
    REPLAY,
    REPLAY_BATCH,
    REPLAY_ROWS,
    JournalResult,
    LatencyRun,
    Startup,
    disk_of,
    measure_journal_latency,
    measure_journal_throughput,
    repeated_keys,
)

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
            measure_journal_throughput(workload, where, runs, log, result)
            measure_journal_latency(workload, where, runs, log, result)
        measure_replay(workload.dsn, workload.table, replay_rows, where, runs, log, result)
        measure_startup(workload.dsn, workload.table, gib, where, runs, log, result)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return result


def journal_targets(result: JournalResult) -> list[Target]:
    """The targets for the journal, judged on ``result``."""
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
