"""One write of a sink's rows and progress marks, in one transaction, and what it raises beyond
psycopg's errors: CommitInDoubt for a connection lost once COMMIT was sent, ProgressConflict
for progress marks the progress table did not match."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from .._sink import Params, ProgressMark
from ..errors import CommitInDoubt, ProgressConflict
from .layout import Layout
from .methods import Writer, commit_was_sent, execute_each, write_progress
from .progress import ProgressTable, is_conflict
from .server_errors import connection_lost

__all__ = ["conflicts_raised", "doubt_raised", "write_batch", "write_within"]


def write_batch(
    connection: AbstractContextManager[psycopg.Connection[Any]],
    writer: Writer,
    rows: Sequence[Params],
    progress: Sequence[ProgressMark],
    table: ProgressTable | None,
) -> None:
    """Write ``rows`` through ``writer`` with the ``progress`` marks (in ``table``), in one
    transaction on a connection of ``connection`` (in autocommit); the marks alone without
    rows."""
    with connection as conn, doubt_raised(conn), conflicts_raised():
        if rows:
            writer.write(conn, rows, progress)
        else:
            assert table is not None
            write_progress(conn, table, progress)


def write_within(
    conn: psycopg.Connection[Any],
    layout: Layout,
    rows: Sequence[Params],
    progress: Sequence[ProgressMark],
    table: ProgressTable | None,
) -> None:
    """Write ``rows`` of ``layout`` and the ``progress`` marks (in ``table``) inside the
    transaction the caller has open on ``conn``: neither commits nor rolls back."""
    with conn.cursor() as cur:
        execute_each(cur, layout.query, layout.delete_query, rows)
    if table is not None:
        with conflicts_raised():
            write_progress(conn, table, progress)


@contextmanager
def doubt_raised(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A write whose connection is lost once it got as far as committing fails as
    CommitInDoubt: the server may have committed it."""
    commit_was_sent(conn, reset=True)
    try:
        yield
    except psycopg.OperationalError as error:
        if commit_was_sent(conn) and connection_lost(error):
            raise CommitInDoubt(
                "the connection was lost after COMMIT was sent: the rows may or may not have "
                f"been written ({_first_line(error)})"
            ) from error
        raise


@contextmanager
def conflicts_raised() -> Iterator[None]:
    """A write whose progress marks did not match fails as ProgressConflict."""
    try:
        yield
    except psycopg.errors.InvalidTextRepresentation as error:
        if is_conflict(error):
            raise ProgressConflict(
                "the journal's progress did not hold what the write expected (another "
                "process, or an earlier attempt whose reply was lost, moved it); nothing was "
                f"written: {error}"
            ) from None
        raise


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
