"""The research command's options and settings: the shipped bench's, and those of the sections
it adds (see ``benchmarks.research.__main__``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from dataclasses import dataclass

from writebehind.tools.args import count
from writebehind.tools.bench import command as shipped
from writebehind.tools.bench.command import Settings, UsageError

__all__ = ["SECTIONS", "ResearchSettings", "add_arguments", "settings_from"]

SECONDARY_BATCH = 1000
"""The batch size of the sections that measure one (threads, latency, pgbouncer)."""
WAITS_ROWS = 10_000
"""The most rows of the waits section: counts vary little from batch to batch."""
THREADS_ROWS = 5_000
"""The most rows of the threads section: beside busy threads a method with many socket waits
writes a few hundred rows a second."""
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The shipped bench's options, then those of the research sections."""
    from .journal import JOURNAL_GIB, REPLAY_ROWS

    shipped.add_arguments(parser)
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
class ResearchSettings(Settings):
    """The shipped bench's settings, and those of the research sections."""

    processes: int = 4
    plot: str | None = None
    app_seconds: float = 10.0
    app_clients: int = 8
    app_workers: int = 2
    coalesce_puts: int = COALESCE_PUTS
    replay_rows: int = 0
    journal_gib: float = 0.0


def settings_from(args: argparse.Namespace) -> ResearchSettings:
    """The shipped bench's settings and checks (``shipped.settings_from``), then the research
    sections' defaults (--quick's where given) and checks: UsageError for a missing extra or
    a missing application benchmark."""
    from .journal import JOURNAL_GIB, REPLAY_ROWS

    base = shipped.settings_from(args)
    quick = bool(args.quick)
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
    if args.app_seconds is not None and not args.app_seconds > 0:
        raise UsageError(f"--app-seconds must be positive, got {args.app_seconds}")
    if args.journal_gib is not None and not 0 < args.journal_gib < 1024:
        raise UsageError(f"--journal-gib must be above 0 and below 1024, got {args.journal_gib}")
    common = {name.name: getattr(base, name.name) for name in dataclasses.fields(base)}
    common["sections"] = sections
    return ResearchSettings(
        **common,
        processes=args.processes,
        plot=args.plot,
        app_seconds=args.app_seconds or (2.0 if quick else 10.0),
        app_clients=args.app_clients,
        app_workers=args.app_workers,
        coalesce_puts=QUICK_COALESCE_PUTS if quick else COALESCE_PUTS,
        replay_rows=args.replay_rows or (QUICK_REPLAY_ROWS if quick else REPLAY_ROWS),
        journal_gib=args.journal_gib or (QUICK_JOURNAL_GIB if quick else JOURNAL_GIB),
    )
