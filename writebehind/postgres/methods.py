"""How a batch reaches the table: the statements of each ``method`` of PostgresUpsert.

Each writer runs one transaction on a connection in autocommit mode, so that it decides its own
round trips. None of them leaves state on the server connection between transactions: no
prepared statement (except ``executemany``, psycopg's own), no table outliving its transaction,
so each works through PgBouncer in transaction mode.

- ``unnest``: one statement, one round trip (more only to send a large batch): ``INSERT ...
  SELECT ... FROM unnest($1, $2, ...)`` with one binary array per column, not prepared.
- ``copy``: ``BEGIN; CREATE TEMPORARY TABLE ... ON COMMIT DROP`` in one round trip, a binary COPY
  into it, then ``INSERT ... SELECT ... FROM`` it ``; COMMIT`` in one more. Creating the table
  costs a little each batch; the COPY is the cheapest way in for large batches.
- ``executemany``: one prepared INSERT per row, pipelined by psycopg, in a transaction.

Deletes (``Deletion`` params among the rows) go in the same transaction: a data-modifying CTE
in front of the INSERT (unnest), one statement more before it (copy), or one prepared DELETE per
key (executemany). A batch's keys are distinct, so the two never meet the same row.

Given progress marks (a queue with a journal), each writes them to the progress table in the
transaction of the batch, in the round trips it makes anyway: as a data-modifying CTE in front
of the INSERT (unnest, copy), or one more statement before the COMMIT (executemany).
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql

from .._sink import Deletion, Params, ProgressMark
from .catalog import Column
from .columns import EncodedColumn, encode_columns
from .progress import ProgressTable, params
from .statements import ConflictRule, delete_from, delete_statement, insert_from, insert_statement

__all__ = [
    "METHODS",
    "Writer",
    "commit_was_sent",
    "committing",
    "execute_each",
    "split_deletes",
    "write_progress",
    "writer_for",
]

METHODS = ("auto", "unnest", "copy", "executemany")

COPY_FROM_ROWS = 2000
"""``auto`` writes batches of at least this many rows by COPY, smaller ones by unnest: where
the two cross in ``python -m writebehind bench`` on the update path."""

_STAGE = sql.Identifier("pg_temp", "writebehind_stage")
_T = TypeVar("_T")


class Writer(Protocol):
    def write(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Params],
        progress: Sequence[ProgressMark] = (),
    ) -> None:
        """Write ``rows`` (distinct keys, at least one) and the ``progress`` marks in one
        transaction on ``conn`` (in autocommit mode)."""
        ...


def writer_for(
    method: str,
    schema: str,
    table: str,
    columns: Sequence[Column],
    rule: ConflictRule,
    progress: ProgressTable | None = None,
) -> Writer:
    """The writer of ``method`` (one of METHODS) for these columns and conflict rule, which
    records marks in ``progress`` (None: a write is given none)."""
    if method == "executemany":
        names = [column.name for column in columns]
        return Executemany(
            insert_statement(schema, table, names, rule),
            progress,
            delete_statement(schema, table, rule.key, rule.version_column) if rule.key else None,
        )
    unnest = Unnest(schema, table, columns, rule, progress)
    if method == "unnest":
        return unnest
    copy = Copy(schema, table, columns, rule, progress)
    if method == "copy":
        return copy
    return Auto(unnest, copy)


def write_progress(
    conn: psycopg.Connection[Any], table: ProgressTable, progress: Sequence[ProgressMark]
) -> None:
    """The upsert of ``progress`` alone: in autocommit, a transaction of its own; else in the
    caller's."""
    if conn.autocommit:
        committing_first(conn)
    conn.execute(table.upsert(progress), params(progress), prepare=False)


_COMMIT_SENT = "_writebehind_commit_sent"


def committing(conn: psycopg.Connection[Any]) -> None:
    """What goes to the server next on ``conn`` commits the write (the statement of an
    autocommit write, a COMMIT): if the connection is lost from now on, the write is in doubt."""
    setattr(conn, _COMMIT_SENT, True)


def committing_first(conn: psycopg.Connection[Any]) -> None:
    """committing() for a write whose first statement commits it: unless the server already
    closed ``conn`` while it sat idle (a restart, pg_terminate_backend: its goodbye waits to be
    read), in which case the statement never runs, and nothing is in doubt."""
    if not _hung_up(conn):
        committing(conn)


def _hung_up(conn: psycopg.Connection[Any]) -> bool:
    pgconn = conn.pgconn
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        # Nothing to read on an idle connection: it is open. Else a notice, or the server's
        # goodbye, then the end of the stream, which a read after it finds.
        for _ in range(3):
            if not poller.poll(0):
                break
            pgconn.consume_input()
    except (OSError, psycopg.Error):
        return True
    return pgconn.status != psycopg.pq.ConnStatus.OK


def commit_was_sent(conn: psycopg.Connection[Any], *, reset: bool = False) -> bool:
    """Whether the write under way on ``conn`` got as far as committing; ``reset`` starts a new
    write."""
    sent = bool(getattr(conn, _COMMIT_SENT, False))
    if reset:
        setattr(conn, _COMMIT_SENT, False)
    return sent


def _table(progress: ProgressTable | None) -> ProgressTable:
    assert progress is not None, "progress marks for a sink that does not track progress"
    return progress


def split_deletes(rows: Sequence[Params]) -> tuple[Sequence[Params], list[Params]]:
    """The upserts and the deletes (``Deletion`` params) of a batch; ``rows`` itself as the
    upserts when there is no delete."""
    every = rows[:]  # a PacedRows gives its list, without reporting progress
    if Deletion not in set(map(type, every)):
        return rows, []
    return (
        [row for row in every if type(row) is not Deletion],
        [row for row in every if type(row) is Deletion],
    )


def _deleting(deletes: _T | None) -> _T:
    """What writes a batch's deletes; TypeError for an append-only sink (None)."""
    if deletes is None:
        raise TypeError("an append-only sink (key=None) cannot delete")
    return deletes


def execute_each(
    cur: psycopg.Cursor[Any],
    query: sql.Composed,
    delete_query: sql.Composed | None,
    rows: Sequence[Params],
) -> None:
    """``query`` for each upsert of ``rows``, then ``delete_query`` for each of its deletes,
    by ``cur`` (executemany: prepared, pipelined), in the transaction open there."""
    upserts, deletes = split_deletes(rows)
    if upserts:
        cur.executemany(query, upserts)
    if deletes:
        cur.executemany(_deleting(delete_query), deletes)


class Executemany:
    """One prepared INSERT per row, pipelined by psycopg, in a transaction; one prepared DELETE
    per key deleted."""

    def __init__(
        self,
        query: sql.Composed,
        progress: ProgressTable | None = None,
        delete_query: sql.Composed | None = None,
    ) -> None:
        self.query = query
        self.delete_query = delete_query
        self._progress = progress

    def write(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Params],
        progress: Sequence[ProgressMark] = (),
    ) -> None:
        with conn.transaction(), conn.cursor() as cur:
            execute_each(cur, self.query, self.delete_query, rows)
            if progress:  # a round trip more, inside the transaction
                write_progress(conn, _table(self._progress), progress)
            committing(conn)  # the block's end sends COMMIT


def _alias(index: int) -> sql.Identifier:
    return sql.Identifier(f"c{index}")


def _select_list(
    columns: Sequence[Column], encoded: Sequence[EncodedColumn], source: str
) -> sql.Composed:
    """The batch's values as the table's columns.

    A value sent in its own type goes as it is, so that assigning it to the column follows the
    rules a parameter of ``executemany`` follows (a bool for an int column is refused, not
    cast). A value sent as text is cast to the column's base type, as the server reads an
    untyped parameter; without its typmod, so that the assignment applies the typmod (an error
    for a varchar too long, not a silent cut) and a domain's checks. A column of NULLs only is
    a typed NULL. A string column sent in parts takes the part that holds each row's value,
    each cast to the column's base type as the assignment of a parameter of its type would.
    """
    parts: list[list[sql.Composable]] = [[] for _ in columns]
    for index, sent in enumerate(encoded):
        column = columns[sent.column]
        value: sql.Composable = (
            sql.SQL("NULL")
            if sent.all_null
            else sql.SQL("{}.{}").format(sql.Identifier(source), _alias(index))
        )
        if sent.all_null or sent.wire_type == "text" or column.category == "S":
            schema, name = column.base_type
            value = sql.SQL("CAST({} AS {})").format(value, sql.Identifier(schema, name))
        parts[sent.column].append(value)
    values = [
        part[0] if len(part) == 1 else sql.SQL("COALESCE({})").format(sql.SQL(", ").join(part))
        for part in parts
    ]
    return sql.SQL(", ").join(values)


def _unnested(
    columns: Sequence[Column], encoded: Sequence[EncodedColumn], source: str
) -> sql.Composed:
    """``SELECT`` the batch's values as ``columns`` ``FROM unnest(...)`` of its arrays."""
    sent = [index for index, column in enumerate(encoded) if not column.all_null]
    values = _select_list(columns, encoded, source)
    if not sent:
        return sql.SQL("SELECT {} FROM generate_series(1, {}) AS {}").format(
            values, sql.Placeholder(), sql.Identifier(source)
        )
    return sql.SQL("SELECT {} FROM unnest({}) AS {}({})").format(
        values,
        sql.SQL(", ").join(sql.Placeholder(format="b") for _ in sent),
        sql.Identifier(source),
        sql.SQL(", ").join(_alias(index) for index in sent),
    )


def _arrays(encoded: Sequence[EncodedColumn], rows: int) -> list[Any]:
    arrays: list[Any] = [column.values for column in encoded if not column.all_null]
    return arrays or [rows]  # rows of NULLs only: no array to count them, so a series does


class _Deletes:
    """The DELETE of a batch's deleted keys, from binary arrays as unnest sends upserts."""

    def __init__(
        self, schema: str, table: str, columns: Sequence[Column], rule: ConflictRule
    ) -> None:
        by_name = {column.name: column for column in columns}
        names = [*rule.key, *filter(None, [rule.version_column])]
        self._columns = tuple(by_name[name] for name in names)
        self._string_columns = _string_columns(self._columns)
        self._target = (schema, table, rule.key, rule.version_column)
        self._statements = _Statements(self._statement)

    def statement(
        self, conn: psycopg.Connection[Any], deletes: Sequence[Params]
    ) -> tuple[bytes, list[Any]]:
        """The DELETE of ``deletes`` and its parameters."""
        encoded = encode_columns(deletes, conn, self._string_columns)
        return self._statements.get(encoded), _arrays(encoded, len(deletes))

    def write_alone(
        self,
        conn: psycopg.Connection[Any],
        deletes: Sequence[Params],
        progress: Sequence[ProgressMark],
        table: ProgressTable | None,
    ) -> None:
        """A batch of deletes only: one statement in autocommit, the marks' CTE in front."""
        delete, arrays = self.statement(conn, deletes)
        if progress:
            delete = _table(table).cte(progress) + delete
            arrays = params(progress) + arrays
        committing_first(conn)  # one statement in autocommit: it commits itself
        conn.execute(delete, arrays, prepare=False)

    def _statement(self, encoded: list[EncodedColumn]) -> bytes:
        source = _unnested(self._columns, encoded, "v")
        return delete_from(*self._target, source).as_bytes(None)


def _with(prefix: bytes, name: bytes, statement: bytes) -> bytes:
    """``prefix`` (``WITH ...`` or nothing) with one more CTE, ``name AS (statement)``."""
    cte = name + b" AS (" + statement + b") "
    return prefix.rstrip() + b", " + cte if prefix else b"WITH " + cte


def _string_columns(columns: Sequence[Column]) -> frozenset[int]:
    return frozenset(index for index, column in enumerate(columns) if column.category == "S")


def _shape(encoded: Sequence[EncodedColumn]) -> tuple[tuple[int, str], ...]:
    """What the statements of a batch depend on: how each column, or each part, is sent."""
    return tuple((c.column, "" if c.all_null else c.wire_type) for c in encoded)


class _Statements:
    """The statements of one shape of batch, built once each (a few shapes occur)."""

    def __init__(self, build: Callable[[list[EncodedColumn]], bytes]) -> None:
        self._build = build
        self._built: dict[tuple[tuple[int, str], ...], bytes] = {}

    def get(self, encoded: list[EncodedColumn]) -> bytes:
        shape = _shape(encoded)
        statement = self._built.get(shape)
        if statement is None:
            statement = self._build(encoded)
            if len(self._built) < 64:
                self._built[shape] = statement
        return statement


class Unnest:
    """One ``INSERT ... SELECT ... FROM unnest(...)`` per batch, in autocommit: one statement is
    one transaction."""

    def __init__(
        self,
        schema: str,
        table: str,
        columns: Sequence[Column],
        rule: ConflictRule,
        progress: ProgressTable | None = None,
    ) -> None:
        self._target = (schema, table, [column.name for column in columns], rule)
        self._columns = tuple(columns)
        self._string_columns = _string_columns(columns)
        self._statements = _Statements(self._statement)
        self._deletes = _Deletes(schema, table, columns, rule) if rule.key else None
        self._progress = progress

    def write(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Params],
        progress: Sequence[ProgressMark] = (),
    ) -> None:
        upserts, deletes = split_deletes(rows)
        if not upserts:
            _deleting(self._deletes).write_alone(conn, deletes, progress, self._progress)
            return
        prefix, arrays = b"", []
        if progress:  # still one statement: the marks' upsert as a CTE, its values first
            prefix, arrays = _table(self._progress).cte(progress), params(progress)
        if deletes:  # and the deletes as one more
            delete, delete_arrays = _deleting(self._deletes).statement(conn, deletes)
            arrays += delete_arrays
            prefix = _with(prefix, b"writebehind_deleted", delete)
        encoded = encode_columns(upserts, conn, self._string_columns)
        statement = self._statements.get(encoded)
        if prefix:
            statement = prefix + statement
        arrays += _arrays(encoded, len(upserts))
        # Not prepared: a prepared statement is server state that PgBouncer cannot follow.
        committing_first(conn)  # one statement in autocommit: it commits itself
        conn.execute(statement, arrays, prepare=False)

    def _statement(self, encoded: list[EncodedColumn]) -> bytes:
        source = _unnested(self._columns, encoded, "v")
        return insert_from(*self._target, source).as_bytes(None)


class Copy:
    """A binary COPY into a staging table made in the transaction, then one INSERT from it."""

    def __init__(
        self,
        schema: str,
        table: str,
        columns: Sequence[Column],
        rule: ConflictRule,
        progress: ProgressTable | None = None,
    ) -> None:
        self._target = (schema, table, [column.name for column in columns], rule)
        self._columns = tuple(columns)
        self._string_columns = _string_columns(columns)
        self._copy = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(_STAGE).as_bytes(None)
        self._stages = _Statements(self._stage)
        self._inserts = _Statements(self._insert)
        self._deletes = _Deletes(schema, table, columns, rule) if rule.key else None
        self._progress = progress

    def write(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Params],
        progress: Sequence[ProgressMark] = (),
    ) -> None:
        upserts, deletes = split_deletes(rows)
        if not upserts:  # deletes only: one statement, as unnest sends it
            _deleting(self._deletes).write_alone(conn, deletes, progress, self._progress)
            return
        encoded = encode_columns(upserts, conn, self._string_columns)
        insert = self._inserts.get(encoded)
        if progress:
            # "INSERT ...; COMMIT" goes as one string, without parameters: values written in.
            insert = _table(self._progress).literal_cte(progress, conn) + insert
        with conn.cursor() as cur:
            try:
                cur.execute(self._stages.get(encoded))
                with cur.copy(self._copy) as copy:
                    copy.set_types([column.wire_type for column in encoded])
                    for row in zip(*(column.values for column in encoded), strict=True):
                        copy.write_row(row)
                if deletes:  # a round trip more, inside the transaction
                    delete, arrays = _deleting(self._deletes).statement(conn, deletes)
                    cur.execute(delete, arrays, prepare=False)
                committing(conn)  # "INSERT ...; COMMIT"
                cur.execute(insert)
            except BaseException:
                _roll_back(conn)
                raise

    def _stage(self, encoded: list[EncodedColumn]) -> bytes:
        # Made in the transaction and dropped at its end: nothing is left on the server
        # connection for the next client of a pooler to trip on.
        return (
            sql.SQL("BEGIN; CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP")
            .format(
                _STAGE,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(
                        _alias(index), sql.Identifier("pg_catalog", column.wire_type)
                    )
                    for index, column in enumerate(encoded)
                ),
            )
            .as_bytes(None)
        )

    def _insert(self, encoded: list[EncodedColumn]) -> bytes:
        source = sql.SQL("SELECT {} FROM {} AS s").format(
            _select_list(self._columns, encoded, "s"), _STAGE
        )
        # One round trip: a failed INSERT skips the COMMIT, and the writer rolls back.
        return sql.SQL("{}; COMMIT").format(insert_from(*self._target, source)).as_bytes(None)


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    with suppress(psycopg.Error):  # a broken connection: the pool discards it
        conn.rollback()


class Auto:
    """Small batches by unnest (one round trip), large ones by COPY (the least work per row)."""

    def __init__(self, unnest: Writer, copy: Writer) -> None:
        self._unnest = unnest
        self._copy = copy

    def write(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Params],
        progress: Sequence[ProgressMark] = (),
    ) -> None:
        writer = self._copy if len(rows) >= COPY_FROM_ROWS else self._unnest
        writer.write(conn, rows, progress)
