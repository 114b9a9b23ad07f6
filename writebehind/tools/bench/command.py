"""``python -m writebehind bench``: its options, and the run of its sections in turn.

The shipped bench has one section, ``throughput`` (raw loops and writebehind per method, batch
size and path), enough to size a server with; ``benchmarks/research`` of a checkout adds the
others to the same runner (``Bench``). Tables go to standard output as each section ends,
progress to standard error.
Exit status: 0; 1 when a run left a row unwritten or with a value other than the one it
must hold, or gave rows up; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from ..args import count

if TYPE_CHECKING:
    from .targets import Target
    from .workload import Workload

__all__ = [
    "DEFAULT_ROWS",
    "DEFAULT_RUNS",
    "DESCRIPTION",
    "HELP",
    "NAME",
    "Bench",
    "Settings",
    "UsageError",
    "add_arguments",
    "execute",
    "run",
    "settings_from",
]

NAME = "bench"
HELP = "measure writebehind against raw psycopg loops doing the same writes"
DESCRIPTION = (
    "Measure upsert throughput of writebehind's write methods against raw psycopg "
    "loops (executemany, binary COPY) doing the same writes in the same run, per "
    "batch size and path. Prints Markdown tables. Exits 1 if a run leaves a row "
    "unwritten or gives rows up."
)
DEFAULT_ROWS = 30_000
DEFAULT_RUNS = 3
DEFAULT_BATCH_SIZES = (100, 1000, 5000)
QUICK_ROWS = 2_000
QUICK_RUNS = 1
QUICK_BATCH_SIZES = (100, 1000)
DEFAULT_TABLE = "writebehind_bench"
MAX_TABLE_BYTES = 50  # room for the suffixes of the tables made beside it, within 63 bytes


UNKNOWN_OPTIONS_HINT = (
    "\n(the research sections and their options, --only, --app and --plot among them, run from "
    "a source checkout: python -m benchmarks.research --help)"
)
"""Said after an option the bench does not know."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the bench command."""
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


@dataclass
class Settings:
    """The options once defaults and --quick are applied."""

    dsn: str | None
    rows: int
    runs: int
    batch_sizes: list[int]
    paths: list[str]
    methods: list[str | None]
    table: str
    sections: list[str] = field(default_factory=lambda: ["throughput"])
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    """A smoke run: too few rows and runs for its targets to mean anything."""


class UsageError(Exception):
    """Options that cannot be run (exit status 2)."""


def settings_from(args: argparse.Namespace) -> Settings:
    """Apply the defaults (--quick's where given) and check what the options need: UsageError
    for a method this writebehind lacks or a table name too long."""
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
    if not args.table or len(args.table.encode()) > MAX_TABLE_BYTES:
        # PostgreSQL cuts longer names, and "<table>_old" could become the table itself.
        raise UsageError(
            f"--table must be a name of 1 to {MAX_TABLE_BYTES} bytes, got {args.table!r}"
        )
    return Settings(
        dsn=args.dsn,
        quick=quick,
        rows=args.rows or (QUICK_ROWS if quick else DEFAULT_ROWS),
        runs=args.runs or (QUICK_RUNS if quick else DEFAULT_RUNS),
        batch_sizes=list(
            dict.fromkeys(args.batch_size or (QUICK_BATCH_SIZES if quick else DEFAULT_BATCH_SIZES))
        ),
        paths=["insert", "update"] if args.path == "both" else [args.path],
        methods=methods,
        table=args.table,
        notes=notes,
    )


def run(args: argparse.Namespace) -> int:
    """Run the bench command; returns the exit status."""
    return execute(args, settings_from, Bench)


S = TypeVar("S", bound=Settings)


def execute(
    args: argparse.Namespace,
    settings_of: Callable[[argparse.Namespace], S],
    runner: Callable[[S, str, TextIO, TextIO], Bench],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``runner``'s sections with the settings ``settings_of(args)`` (tables to ``out``,
    progress and errors to ``err``; default the standard streams); returns the exit status."""
    import psycopg

    from ...embedded import database
    from .workload import CheckFailed

    out = out or sys.stdout
    err = err or sys.stderr

    try:
        settings = settings_of(args)
    except UsageError as error:
        print(f"error: {error}", file=err)
        return 2

    started = time.perf_counter()
    try:
        with database(settings.dsn) as dsn:
            return runner(settings, dsn, out, err).run(started)
    except ImportError as error:  # the embedded extra is missing
        print(f"error: {error}", file=err)
        return 2
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=err)
        return 1
    except psycopg.Error as error:  # no server there, or one that refused the work
        print(f"error: {type(error).__name__}: {error}".rstrip(), file=err)
        return 1


class Bench:
    """One run of the command against one server: each section of ``settings.sections`` is
    the method named after it with a leading underscore."""

    def __init__(self, settings: Settings, dsn: str, out: TextIO, err: TextIO) -> None:
        self.settings = settings
        self.dsn = dsn
        self.out = out
        self.err = err
        self.failures: list[str] = []
        self._workloads: dict[int, Workload] = {}
        self._stack = ExitStack()

    def log(self, line: str) -> None:
        """A progress line, to ``err``."""
        print(line, file=self.err, flush=True)

    def emit(self, text: str = "") -> None:
        """Part of the report, to ``out``."""
        print(text, file=self.out, flush=True)

    def run(self, started: float) -> int:
        """Every section in turn, then the targets; returns the exit status. ``started``: the
        ``perf_counter()`` the wall time is counted from."""
        s = self.settings
        self.emit(self._head())
        with ExitStack() as self._stack:
            results = {}
            for section in s.sections:
                section_started = time.perf_counter()
                results[section] = getattr(self, f"_{section}")()
                self.log(f"{section}: {time.perf_counter() - section_started:.0f} s")
            if not all(workload.checkpoints for workload in self._workloads.values()):
                self.emit("\nnote: the role may not CHECKPOINT; runs started without one")
        found = self.targets(results)
        if found:
            self.emit("\n## Targets (same run)\n")
            if s.quick:
                self.emit("A --quick run has too few rows and runs to judge by; a full run does.\n")
            for target in found:
                self.emit(target.line())
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

        from ..._version import __version__

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
        return cells

    def default_method(self) -> str | None:
        """The method the sections that measure one use: the default, where there is a choice."""
        return "auto" if "auto" in self.settings.methods else None

    def default_label(self) -> str:
        """How ``default_method()``'s side is named in the tables."""
        from .throughput import side_label

        return side_label(self.default_method())

    def targets(self, results: dict[str, Any]) -> list[Target]:
        """The targets judged on ``results`` (section name -> its result)."""
        from .targets import targets

        return targets(results, self.default_label())


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
