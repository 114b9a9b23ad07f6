"""The command line: ``python -m writebehind demo`` and ``python -m writebehind bench``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["main"]


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number (``100_000`` and ``100,000`` too), at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m writebehind",
        description="writebehind: batched, reliable upserts into PostgreSQL from a thread.",
    )
    parser.add_argument("--version", action="version", version=f"writebehind {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    demo = commands.add_parser(
        "demo",
        help="write rows through a queue into PostgreSQL and check them",
        description=(
            "Create the table writebehind_demo (emptied first), put ROWS rows from PRODUCERS "
            "threads through one queue, drain it, count the rows in the table and print a "
            "summary. Exits 1 if the table does not hold every row."
        ),
    )
    demo.add_argument(
        "--dsn",
        help="conninfo of a PostgreSQL to use; default: start an embedded one "
        "(needs the 'embedded' extra)",
    )
    demo.add_argument("--rows", type=_count(1), default=100_000, help="default: %(default)s")
    demo.add_argument("--producers", type=_count(1), default=4, help="default: %(default)s")
    demo.add_argument("--batch-size", type=_count(1), default=500, help="default: %(default)s")
    bench = commands.add_parser(
        "bench",
        help="measure writebehind against raw psycopg loops doing the same writes",
        description=(
            "Measure upsert throughput of writebehind's write methods against raw psycopg "
            "loops (executemany, binary COPY) doing the same writes in the same run, per "
            "batch size and path; socket waits per batch; throughput beside CPU-bound "
            "threads; put() latency and peak RSS; several processes through PgBouncer; "
            "and, with --app, the application benchmark. Prints Markdown tables. Exits 1 if "
            "a run leaves a row unwritten or gives rows up."
        ),
    )
    from .bench.command import add_arguments

    add_arguments(bench, _count)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "bench":
        from .bench.command import run

        return run(args)
    return _demo(args.dsn, args.rows, args.producers, args.batch_size)


def _demo(dsn: str | None, rows: int, producers: int, batch_size: int) -> int:
    import psycopg

    from ._demo import describe_server, format_summary, run_demo
    from .errors import SchemaError

    try:
        result = run_demo(dsn, rows=rows, producers=producers, batch_size=batch_size)
    except ImportError as error:  # the embedded extra is missing
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (psycopg.Error, SchemaError) as error:  # no server there, or a table of another shape
        print(f"error: {describe_server(dsn)}: {error}".rstrip(), file=sys.stderr)
        return 1
    print(
        format_summary(
            result, producers=producers, batch_size=batch_size, where=describe_server(dsn)
        )
    )
    return 0 if result.ok else 1
