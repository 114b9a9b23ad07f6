"""``python -m writebehind bench``: its options, and the run of every section in turn.

Sections: ``throughput`` (raw loops and writebehind per method, batch size and path),
``waits`` (socket waits per batch), ``threads`` (beside CPU-bound threads), ``latency``
(put() latency and peak RSS, in child processes), ``pgbouncer`` (several processes through
PgBouncer against straight to the server), ``writers`` (``writers=2`` against one, and the
raw COPY loop on two connections against one), ``coalesce`` (rows written per 100 puts of a
skewed workload, with and without ``coalesce``), ``journal`` (the durable journal:
throughput and put() latency with and without it, replay, start-up with a large journal; only
with ``--only journal``, it takes minutes) and, with ``--app``, ``app`` (the application
benchmark). Tables go to standard output as each section ends, progress to
standard error.
Exit status: 0; 1 when a run left a row unwritten or with a value other than the one it
must hold, or gave rows up (or a child failed); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .workload import Workload

__all__ = ["DEFAULT_ROWS", "DEFAULT_RUNS", "SECTIONS", "add_arguments", "run"]

DEFAULT_ROWS = 30_000
DEFAULT_RUNS = 3
DEFAULT_BATCH_SIZES = (100, 1000, 5000)
QUICK_ROWS = 2_000
QUICK_RUNS = 1
QUICK_BATCH_SIZES = (100, 1000)
SECONDARY_BATCH = 1000
WAITS_ROWS = 10_000
"""The most rows of the waits section: counts vary little from batch to batch."""
THREADS_ROWS = 5_000
"""The most rows of the threads section: beside busy threads a method with many socket waits
writes a few hundred rows a second."""
"""The batch size of the sections that measure one (threads, latency, pgbouncer)."""
BUSY_THREADS = (1, 2)
COALESCE_PUTS = 100_000
QUICK_COALESCE_PUTS = 5_000
SECTIONS = (
    "throughput",
    "waits",
    "threads",
    "latency",
    "pgbouncer",
    "writers",
    "coalesce",
    "deletes",
    "journal",
    "app",
)
OPT_IN = ("journal", "app")
"""Sections run only when asked for (--only, or --app): they take minutes of their own."""
QUICK_REPLAY_ROWS = 5_000
QUICK_JOURNAL_GIB = 0.01
DEFAULT_TABLE = "writebehind_bench"
MAX_TABLE_BYTES = 50  # room for the suffixes of the tables made beside it, within 63 bytes


def add_arguments(parser: argparse.ArgumentParser, count: Callable[[int], Any]) -> None:
    """The options of the bench command; ``count(minimum)`` is the argparse type of a whole
    number at least ``minimum``."""
    from .journal import JOURNAL_GIB, REPLAY_ROWS
    from .writer import METHODS

    parser.add_argument(
        "--dsn", help="conninfo of a PostgreSQL to use; default: start an embedded one"
    )
    parser.add_argument(
        "--rows",
        type=count(1),
        help=f"rows per run (default {DEFAULT_ROWS:,}; --quick: {QUICK_ROWS:,})",
    )
    parser.add_argument(
        "--runs",
        type=count(1),
        help=f"runs per side, medians taken (default {DEFAULT_RUNS}; --quick: {QUICK_RUNS})",
    )
    parser.add_argument(
        "--batch-size",
        type=count(1),
        action="append",
        metavar="B",
        help="a batch size to measure; repeat for several (default "
        + " ".join(map(str, DEFAULT_BATCH_SIZES))
        + "; --quick: "
        + " ".join(map(str, QUICK_BATCH_SIZES))
        + ")",
    )
    parser.add_argument(
        "--path",
        choices=("insert", "update", "both"),
        default="both",
        help="insert new keys into an empty table, update existing ones, or both (default)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        action="append",
        help="a writebehind write method to measure; repeat for several (default: all)",
    )
    parser.add_argument(
        "--processes",
        type=count(2),
        default=4,
        help="writer processes through PgBouncer and direct (default %(default)s)",
    )
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        metavar="SECTION",
        help="run only this section; repeat for several (" + ", ".join(SECTIONS) + ")",
    )
    parser.add_argument(
        "--table",
        default=DEFAULT_TABLE,
        help="table to (re)create and write; dropped first (default %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of seconds: few rows, one run, batch sizes "
        + " ".join(map(str, QUICK_BATCH_SIZES)),
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw rows/s against batch size per side (needs the 'plot' extra: matplotlib)",
    )
    parser.add_argument(
        "--replay-rows",
        type=count(1),
        help="journal section: rows of the journal replayed (default "
        f"{REPLAY_ROWS:,}; --quick: {QUICK_REPLAY_ROWS:,})",
    )
    parser.add_argument(
        "--journal-gib",
        type=float,
        help="journal section: GiB of the journal of the start-up part (default "
        f"{JOURNAL_GIB:g}; --quick: {QUICK_JOURNAL_GIB:g})",
    )
    parser.add_argument(
        "--app",
        action="store_true",
        help="also run the application benchmark (the Flask example under gunicorn)",
    )
    parser.add_argument(
        "--app-seconds", type=float, help="seconds per endpoint (default 10; --quick: 2)"
    )
    parser.add_argument("--app-clients", type=count(1), default=8, help="default %(default)s")
    parser.add_argument(
        "--app-workers", type=count(1), default=2, help="gunicorn workers (default %(default)s)"
    )


@dataclass
class Settings:
    """The options once defaults and --quick are applied."""

    dsn: str | None
    rows: int
    runs: int
    batch_sizes: list[int]
    paths: list[str]
    methods: list[str | None]
    sections: list[str]
    processes: int
    table: str
    plot: str | None
    app_seconds: float
    app_clients: int
    app_workers: int
    coalesce_puts: int = COALESCE_PUTS
    replay_rows: int = 0
    journal_gib: float = 0.0
    notes: list[str] = field(default_factory=list)


class UsageError(Exception):
    """Options that cannot be run (exit status 2)."""


def settings_from(args: argparse.Namespace) -> Settings:
    """Apply the defaults (--quick's where given) and check what the options need: UsageError
    for a method this writebehind lacks, a missing extra or a missing application benchmark."""
    from .journal import JOURNAL_GIB, REPLAY_ROWS
    from .writer import METHODS, supports_method

    quick = bool(args.quick)
    notes = []
    if supports_method():
        methods: list[str | None] = list(dict.fromkeys(args.method or METHODS))
    elif args.method:
        raise UsageError(
            f"--method {args.method[0]}: this writebehind's PostgresUpsert has no method= "
            "parameter (it has one write path); run without --method to measure it"
        )
    else:
        methods = [None]
        notes.append("this writebehind has one write path (no method=): measured as 'writebehind'")
    wanted = set(args.only or [s for s in SECTIONS if s not in OPT_IN])
    if args.app:
        wanted.add("app")
    sections = [section for section in SECTIONS if section in wanted]
    if "app" in sections:
        try:
            importlib.import_module(".app", __package__)
        except ImportError as error:
            raise UsageError(
                f"--app: the application benchmark is not available ({error})"
            ) from None
    if args.plot:
        if "throughput" not in sections:
            raise UsageError("--plot draws the throughput section: do not leave it out (--only)")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError(
                "--plot needs matplotlib, the 'plot' extra: pip install 'writebehind[plot]'"
            ) from None
    if not args.table or len(args.table.encode()) > MAX_TABLE_BYTES:
        # PostgreSQL cuts longer names, and "<table>_old" could become the table itself.
        raise UsageError(
            f"--table must be a name of 1 to {MAX_TABLE_BYTES} bytes, got {args.table!r}"
        )
    if args.app_seconds is not None and not args.app_seconds > 0:
        raise UsageError(f"--app-seconds must be positive, got {args.app_seconds}")
    if args.journal_gib is not None and not 0 < args.journal_gib < 1024:
        raise UsageError(f"--journal-gib must be above 0 and below 1024, got {args.journal_gib}")
    return Settings(
        dsn=args.dsn,
        rows=args.rows or (QUICK_ROWS if quick else DEFAULT_ROWS),
        runs=args.runs or (QUICK_RUNS if quick else DEFAULT_RUNS),
        batch_sizes=list(
            dict.fromkeys(args.batch_size or (QUICK_BATCH_SIZES if quick else DEFAULT_BATCH_SIZES))
        ),
        paths=["insert", "update"] if args.path == "both" else [args.path],
        methods=methods,
        sections=sections,
        processes=args.processes,
        table=args.table,
        plot=args.plot,
        app_seconds=args.app_seconds or (2.0 if quick else 10.0),
        app_clients=args.app_clients,
        app_workers=args.app_workers,
        coalesce_puts=QUICK_COALESCE_PUTS if quick else COALESCE_PUTS,
        replay_rows=args.replay_rows or (QUICK_REPLAY_ROWS if quick else REPLAY_ROWS),
        journal_gib=args.journal_gib or (QUICK_JOURNAL_GIB if quick else JOURNAL_GIB),
        notes=notes,
    )


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the bench command (tables to ``out``, progress and errors to ``err``; default the
    standard streams); returns the exit status."""
    import psycopg

    from .workload import CheckFailed

    out = out or sys.stdout
    err = err or sys.stderr

    try:
        settings = settings_from(args)
    except UsageError as error:
        print(f"error: {error}", file=err)
        return 2
    from ..embedded import database

    started = time.perf_counter()
    try:
        with database(settings.dsn) as dsn:
            return _Bench(settings, dsn, out, err).run(started)
    except ImportError as error:  # the embedded extra is missing
        print(f"error: {error}", file=err)
        return 2
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=err)
        return 1
    except psycopg.Error as error:  # no server there, or one that refused the work
        print(f"error: {type(error).__name__}: {error}".rstrip(), file=err)
        return 1


class _Bench:
    """One run of the command against one server."""

    def __init__(self, settings: Settings, dsn: str, out: TextIO, err: TextIO) -> None:
        self.settings = settings
        self.dsn = dsn
        self.out = out
        self.err = err
        self.failures: list[str] = []
        self._workloads: dict[int, Workload] = {}
        self._stack = ExitStack()

    def log(self, line: str) -> None:
        print(line, file=self.err, flush=True)

    def emit(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self, started: float) -> int:
        from ._child import ChildFailed

        s = self.settings
        self.emit(self._head())
        try:
            with ExitStack() as self._stack:
                results = {}
                for section in s.sections:
                    section_started = time.perf_counter()
                    results[section] = getattr(self, f"_{section}")()
                    self.log(f"{section}: {time.perf_counter() - section_started:.0f} s")
                if not all(workload.checkpoints for workload in self._workloads.values()):
                    self.emit("\nnote: the role may not CHECKPOINT; runs started without one")
        except ChildFailed as failure:
            print(f"FAILED: {failure}", file=self.err)
            return 1
        self._targets(results)
        minutes = (time.perf_counter() - started) / 60
        self.emit(f"\nload average at the end: {_load()}; wall time {minutes:.1f} min")
        if self.failures:
            for line in self.failures:
                self.emit(f"FAILED: {line}")
            return 1
        self.emit("checks: every run left every row with its new value; no row was given up")
        return 0

    def _head(self) -> str:
        import psycopg

        from .._version import __version__

        s = self.settings
        with psycopg.connect(self.dsn) as conn:
            server = conn.info.parameter_status("server_version") or "(version unknown)"
        where = "embedded" if s.dsn is None else "given by --dsn"
        lines = [
            f"# writebehind {__version__} bench",
            "",
            f"PostgreSQL {server} ({where}); Python {platform.python_version()}; "
            f"{os.cpu_count()} CPUs ({_cpu_model()}); load average at the start: {_load()}",
            f"{s.rows:,} rows per run (9 columns, ~350 B with a jsonb column), key id; "
            f"medians of {s.runs} run(s) per side, taking turns; the table rebuilt "
            "(and checkpointed) before every run, every run checked. spread: (max - min) / "
            "median.",
        ]
        lines += [f"note: {note}" for note in s.notes]
        return "\n".join(lines)

    def _workload(self, most: int | None = None) -> Workload:
        """The workload of ``--rows`` rows, or of at most ``most`` rows (a table of its own,
        dropped at the end), opened on first use."""
        from .workload import Workload

        s = self.settings
        rows = s.rows if most is None else min(s.rows, most)
        if rows not in self._workloads:
            table = s.table if rows == s.rows else f"{s.table}_{rows}"
            workload = Workload(self.dsn, table, rows, keep_table=table == s.table)
            self._workloads[rows] = self._stack.enter_context(workload)
        return self._workloads[rows]

    def _throughput(self) -> Any:
        from .report import throughput_table
        from .throughput import measure_throughput, throughput_sides
        from .writer import pool_kept

        s = self.settings
        workload = self._workload()
        with pool_kept(workload.dsn, workload.table):
            cells = measure_throughput(
                workload,
                throughput_sides(workload, s.methods),
                batch_sizes=s.batch_sizes,
                paths=s.paths,
                runs=s.runs,
                log=self.log,
            )
        for path in s.paths:
            self.emit(f"\n## Throughput, {path} path (rows/s)\n")
            self.emit(throughput_table(cells, path))
        if s.plot:
            from .plot import plot_throughput

            plot_throughput(cells, s.plot)
            self.emit(f"\nplot: {s.plot}")
        return cells

    def _waits(self) -> Any:
        from .report import waits_table
        from .waits import measure_waits

        s = self.settings
        workload = self._workload(WAITS_ROWS)
        rows = measure_waits(workload, s.methods, batch_sizes=s.batch_sizes, log=self.log)
        self.emit(
            f"\n## Socket waits per batch (update path, {len(workload.rows):,} rows; each wait "
            "gives the GIL away)\n"
        )
        self.emit(waits_table(rows, s.batch_sizes))
        return rows

    def _threads(self) -> Any:
        from .report import threads_table
        from .threads import measure_beside_threads

        s = self.settings
        workload = self._workload(THREADS_ROWS)
        result = measure_beside_threads(
            workload,
            self._default_method(),
            batch_size=SECONDARY_BATCH,
            busy_threads=BUSY_THREADS,
            runs=s.runs,
            log=self.log,
        )
        self.emit(
            f"\n## Beside CPU-bound Python threads ({self._default_label()}, update path, "
            f"batch {SECONDARY_BATCH}; the worker draining a full queue of "
            f"{len(workload.rows):,} rows)\n"
        )
        self.emit(threads_table(result))
        return result

    def _latency(self) -> Any:
        from .latency import measure_latency
        from .report import latency_table

        s = self.settings
        results = measure_latency(
            self._workload(), s.methods, batch_size=SECONDARY_BATCH, log=self.log
        )
        self.emit(
            f"\n## put() latency with the worker busy, and memory (batch {SECONDARY_BATCH}, "
            f"{s.rows:,} rows put by one thread into a queue that holds them all; "
            "one process per side)\n"
        )
        self.emit(latency_table(results))
        return results

    def _pgbouncer(self) -> Any:
        from .processes import DIRECT, PGBOUNCER, measure_routes
        from .report import routes_table

        s = self.settings
        title = (
            f"\n## {s.processes} processes on disjoint keys: through PgBouncer against direct "
            f"({self._default_label()}, update path, batch {SECONDARY_BATCH})\n"
        )
        try:
            # By name: PgBouncer support is a module of its own, absent from some versions.
            bouncer = importlib.import_module(".pgbouncer", __package__)
        except ImportError as error:
            self.emit(title + f"\nskipped: writebehind.bench.pgbouncer is not available ({error})")
            return None
        if bouncer.pgbouncer_path() is None:
            self.emit(title + "\nskipped: PgBouncer is not installed (apt-get install pgbouncer)")
            return None
        with ExitStack() as stack:
            try:
                through = stack.enter_context(bouncer.running_pgbouncer(self.dsn))
            except Exception as error:  # not startable here: say why, measure the rest
                self.emit(title + f"\nskipped: PgBouncer did not start: {error}")
                return None
            routes = measure_routes(
                self._workload(),
                [(DIRECT, self.dsn), (PGBOUNCER, through)],
                processes=s.processes,
                batch_size=SECONDARY_BATCH,
                runs=s.runs,
                method=self._default_method(),
                log=self.log,
            )
        self.emit(title)
        self.emit(routes_table(routes))
        for route in routes:
            if route.given_up:
                self.failures.append(
                    f"{route.label}: {route.given_up} rows given up; first error: {route.errors[0]}"
                )
        return routes

    def _writers(self) -> Any:
        from .report import writers_table
        from .throughput import side_label
        from .writer import pool_kept, supports_method
        from .writers import (
            WRITERS_BATCH,
            WRITERS_MAXSIZE,
            WRITERS_METHOD,
            measure_writers,
            writers_sides,
        )

        s = self.settings
        method = WRITERS_METHOD if supports_method() else None
        workload = self._workload()
        title = (
            f"\n## Several writers ({side_label(method)}, update path, batch {WRITERS_BATCH:,}, "
            f"{len(workload.rows):,} rows, maxsize {WRITERS_MAXSIZE:,}): writers=2 against "
            "writers=1, and the raw COPY loop on two connections against one\n"
        )
        missing = _missing_parameter("writers")
        if missing:
            self.emit(title + f"\nskipped: {missing}")
            return None
        with pool_kept(workload.dsn, workload.table):
            result = measure_writers(
                workload,
                writers_sides(workload, method, WRITERS_BATCH),
                method=method,
                batch_size=WRITERS_BATCH,
                runs=s.runs,
                log=self.log,
            )
        self.emit(title)
        self.emit(writers_table(result))
        cpus = os.cpu_count()
        self.emit(
            "\nOne producer thread puts every row, timed from the first put() to the end of "
            'flush(): put() is inside the timing. "puts before the clock": every row put '
            "while the table is locked, then the writers drain the full queue (put() outside "
            "the timing). The raw loop on 2 connections runs in two threads over alternate keys "
            "(disjoint), timed from when both have connected. × 1 connection: against the same "
            "kind of side on one connection (one writer). CPU: cores used on average over the "
            "timed part (1.00: one core all the time) by this process (all its threads, one "
            "GIL), by the PostgreSQL server (all its processes; — when it is not on this "
            f"machine), and by the whole machine ({cpus} CPUs, other work included). put() "
            "µs/row: the put() loop's wall time per row (with the writers writing, or, before "
            "the clock, waiting on the lock)."
        )
        return result

    def _deletes(self) -> Any:
        from .deletes import BATCH, KEYS, measure_deletes
        from .report import deletes_table

        s = self.settings
        result = measure_deletes(self.dsn, f"{s.table}_deletes", s.rows, s.runs, self.log)
        self.emit(
            f"\n## Deletes beside upserts ({s.rows:,} writes over {KEYS:,} keys of a full table, "
            f"batch {BATCH:,}, default method; ops/s, medians of {s.runs})\n"
        )
        self.emit(deletes_table(result))
        return result

    def _coalesce(self) -> Any:
        from .coalesce import (
            COALESCE_BATCH,
            KEYS,
            SAMPLE_EVERY,
            ZIPF_S,
            coalesce_sides,
            measure_coalesce,
            skewed_puts,
        )
        from .report import coalesce_table

        s = self.settings
        maxsize = 10_000
        missing = _missing_parameter("coalesce")
        title = (
            f"\n## Queue-wide coalescing (Zipf s={ZIPF_S:g} over {KEYS:,} keys, "
            f"{s.coalesce_puts:,} puts; default method, batch {COALESCE_BATCH:,}, maxsize "
            f"{maxsize:,})\n"
        )
        if missing:
            self.emit(title + f"\nskipped: {missing}")
            return None
        from datetime import datetime, timezone

        puts = skewed_puts(s.coalesce_puts, datetime.now(timezone.utc))
        result = measure_coalesce(
            self.dsn,
            f"{s.table}_coalesce",
            puts,
            coalesce_sides(),
            batch_size=COALESCE_BATCH,
            maxsize=maxsize,
            runs=s.runs,
            log=self.log,
        )
        self.emit(title)
        self.emit(coalesce_table(result))
        self.emit(
            f"\nThe puts touch {result.distinct_keys:,} keys. Rows written: rows in the writes "
            "the sink committed (a batch combines the rows of one key in any case; coalesce "
            "also combines a row into its key's row still waiting in the queue). One producer "
            "thread; puts/s from the first put() to the end of flush(). Peak depth: "
            "Metrics.current_queue_depth (rows accepted, not yet written); peak rows waiting: "
            f"the rows taking room in the queue; both sampled every {SAMPLE_EVERY} puts. "
            "Every run checked: each key holds the last score put for it, and the last views "
            "put (replace) or their sum (merge)."
        )
        return result

    def _journal(self) -> Any:
        from .journal import journal_report, measure_journal

        s = self.settings
        missing = _missing_parameter("journal")
        if missing:
            self.emit(f"\n## Durable journal\n\nskipped: {missing}")
            return None
        result = measure_journal(
            self._workload(),
            replay_rows=s.replay_rows,
            gib=s.journal_gib,
            runs=s.runs,
            log=self.log,
        )
        self.emit(
            f"\n## Durable journal (default method; {s.replay_rows:,} rows replayed, a "
            f"{s.journal_gib:g} GiB journal at start-up)\n"
        )
        self.emit(journal_report(result))
        return result

    def _app(self) -> Any:
        from .report import app_table

        # Imported by name: the application benchmark is a module of its own, maybe absent.
        run_app = importlib.import_module(".app", __package__).run
        s = self.settings
        self.log(
            f"application benchmark: {s.app_seconds:g} s per endpoint, "
            f"{s.app_clients} clients, {s.app_workers} workers"
        )
        results = run_app(
            self.dsn, seconds=s.app_seconds, clients=s.app_clients, workers=s.app_workers
        )
        self.emit(
            f"\n## Application benchmark (the Flask example under gunicorn, "
            f"{s.app_workers} workers, {s.app_clients} clients, {s.app_seconds:g} s each)\n"
        )
        self.emit(app_table(results))
        return results

    def _default_method(self) -> str | None:
        return "auto" if "auto" in self.settings.methods else None

    def _default_label(self) -> str:
        from .throughput import side_label

        return side_label(self._default_method())

    def _targets(self, results: dict[str, Any]) -> None:
        from .targets import targets

        found = targets(results, self._default_label())
        if results.get("journal") is not None:
            from .journal import journal_targets

            found += journal_targets(results["journal"])
        if found:
            self.emit("\n## Targets (same run)\n")
            for target in found:
                self.emit(target.line())


def _missing_parameter(name: str) -> str | None:
    """Why a section needing ``WriteBehindQueue(..., name=...)`` cannot run here, if so."""
    import inspect

    from ..queue.core import WriteBehindQueue

    if name in inspect.signature(WriteBehindQueue).parameters:
        return None
    return f"this writebehind's WriteBehindQueue has no {name}= parameter"


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m writebehind bench`` without the rest of the command line."""
    from .._cli import main as cli_main

    return cli_main(["bench", *(argv if argv is not None else sys.argv[1:])])
