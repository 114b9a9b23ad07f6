"""The command line, ``python -m writebehind COMMAND``: the parser built from the registry of
commands, and ``main``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Protocol

from .._version import __version__
from . import demo
from .bench import command as bench

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(Protocol):
    """What a command module provides; its heavy imports wait for ``run``, so that building
    the parser stays cheap."""

    NAME: str
    HELP: str
    """One line, in the list of commands."""
    DESCRIPTION: str
    """The command's own ``--help``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


COMMANDS: tuple[Command, ...] = (demo, bench)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="python -m writebehind",
        description="writebehind: batched, reliable upserts into PostgreSQL from a thread.",
    )
    parser.add_argument("--version", action="version", version=f"writebehind {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.NAME, help=command.HELP, description=command.DESCRIPTION
        )
        command.add_arguments(sub)
        sub.set_defaults(command_parser=sub)  # its usage line, for an option it does not know
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help(sys.stderr)
        return 2
    (command,) = (command for command in COMMANDS if args.command == command.NAME)
    if unknown:
        hint = getattr(command, "UNKNOWN_OPTIONS_HINT", "")
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return command.run(args)
