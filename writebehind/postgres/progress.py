"""The progress table: how far each journal lane is applied, committed with the rows it covers.

``writebehind_progress`` lives in the schema of the target table, one row per lane::

    journal text PRIMARY KEY, applied_seq bigint NOT NULL,
    applied_extra bigint[] NOT NULL DEFAULT '{}', owner text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()

A write moves one row per mark in the transaction of its batch, so the recorded progress is exactly
what the table holds. The move is conditional: a row is updated only if it holds what the mark
expects (its last written value, and its owner), or inserted only if the mark expects none; when
any mark does not match, the statement fails with the text CONFLICT_MARKER, which the sink turns
into ProgressConflict, and nothing of the write commits. A write left running on the server by a
process that died (blocked on a lock) can so never commit after another process claimed its rows
(claim()) and replayed them. Nothing here is prepared on the server (PgBouncer in transaction mode
cannot follow a prepared statement): every statement runs with ``prepare=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors, sql

from .._sink import ProgressMark
from ..errors import SchemaError
from .catalog import TableInfo, read_table
from .connections import autocommit

__all__ = [
    "CONFLICT_MARKER",
    "PROGRESS_TABLE",
    "ProgressTable",
    "check_marks",
    "check_prefix",
    "ensured",
    "is_conflict",
    "params",
    "recorded_in",
]

PROGRESS_TABLE = "writebehind_progress"

# name -> type as the catalog spells it (regtype::text of the base type)
_COLUMNS = {
    "journal": "text",
    "applied_seq": "bigint",
    "applied_extra": "bigint[]",
    "owner": "text",
    "updated_at": "timestamp with time zone",
}
CONFLICT_MARKER = "writebehind_progress_conflict"
"""In the error of a write whose marks did not match the progress table."""
_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
# The data-modifying CTEs that carry the progress in front of a batch's INSERT. Names of their
# own: an unqualified reference to them could only come from the statement itself.
_UPDATED = sql.Identifier("writebehind_progress_updated")
_INSERTED = sql.Identifier("writebehind_progress_inserted")
_CHECKED = sql.Identifier("writebehind_progress_checked")
_BIGINT = range(-(2**63), 2**63)
# Another process creating the table at the same moment: it exists now, look again.
_CREATED_MEANWHILE = (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject)
_CANNOT_CREATE = (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)


class ProgressTable:
    """The statements on one schema's progress table."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.identifier = sql.Identifier(schema, PROGRESS_TABLE)
        self._ctes: dict[tuple[int, int], bytes] = {}
        self._select = sql.SQL(
            "SELECT journal, applied_seq, applied_extra FROM {} WHERE starts_with(journal, %s)"
        ).format(self.identifier)
        self._delete = sql.SQL("DELETE FROM {} WHERE starts_with(journal, %s)").format(
            self.identifier
        )
        self._claim_new = sql.SQL(
            "INSERT INTO {} (journal, applied_seq, applied_extra, owner) "
            "SELECT journal, 0, '{{}}', CAST(%s AS text) "
            "FROM unnest(CAST(%s AS text[])) AS journal "
            "ON CONFLICT (journal) DO UPDATE SET owner = EXCLUDED.owner, updated_at = now()"
        ).format(self.identifier)
        self._claim_old = sql.SQL(
            "UPDATE {} SET owner = CAST(%s AS text), updated_at = now() "
            "WHERE starts_with(journal, %s) AND owner <> CAST(%s AS text)"
        ).format(self.identifier)

    def create_statement(self) -> sql.Composed:
        """The CREATE TABLE of the progress table (IF NOT EXISTS)."""
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (journal text PRIMARY KEY, "
            "applied_seq bigint NOT NULL, applied_extra bigint[] NOT NULL DEFAULT '{{}}', "
            "owner text NOT NULL DEFAULT '', updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(self.identifier)

    def upsert(self, marks: Sequence[ProgressMark]) -> bytes:
        """The conditional move of ``marks`` alone, with placeholders for ``params()``."""
        return self.cte(marks) + b"SELECT 1"

    def cte(self, marks: Sequence[ProgressMark]) -> bytes:
        """``WITH ...`` moving ``marks``, to put in front of an INSERT whose placeholders come
        after the marks' ``params()``."""
        shape = _shape(marks)
        statement = self._ctes.get(shape)
        if statement is None:
            statement = self._cte(*shape, sql.Placeholder).as_bytes(None)
            if len(self._ctes) < 64:  # marks per write vary little
                self._ctes[shape] = statement
        return statement

    def literal_cte(self, marks: Sequence[ProgressMark], conn: psycopg.Connection[Any]) -> bytes:
        """As cte() with the values written in: for a statement sent without parameters (in
        one string with others, as COPY's ``INSERT ...; COMMIT``)."""
        values = iter(params(marks))
        return self._cte(*_shape(marks), lambda: sql.Literal(next(values))).as_bytes(conn)

    def _cte(self, updates: int, inserts: int, value: Callable[[], sql.Composable]) -> sql.Composed:
        def row(casts: Sequence[str]) -> sql.Composed:
            return sql.SQL("({})").format(
                sql.SQL(", ").join(
                    sql.SQL("CAST({} AS {})").format(value(), sql.SQL(cast)) for cast in casts
                )
            )

        parts = []
        found = []
        if updates:
            rows = [row(_UPDATE_CASTS) for _ in range(updates)]
            parts.append(
                sql.SQL(
                    "{} AS (UPDATE {} AS p SET applied_seq = v.applied_seq, "
                    "applied_extra = v.applied_extra, updated_at = now() "
                    "FROM (VALUES {}) AS v(journal, applied_seq, applied_extra, expected_seq, "
                    "expected_extra, owner) WHERE p.journal = v.journal AND "
                    "p.applied_seq = v.expected_seq AND p.applied_extra = v.expected_extra "
                    "AND p.owner = v.owner RETURNING 1)"
                ).format(_UPDATED, self.identifier, sql.SQL(", ").join(rows))
            )
            found.append(sql.SQL("(SELECT count(*) FROM {})").format(_UPDATED))
        if inserts:
            rows = [row(_INSERT_CASTS) for _ in range(inserts)]
            parts.append(
                sql.SQL(
                    "{} AS (INSERT INTO {} (journal, applied_seq, applied_extra, owner) "
                    "VALUES {} ON CONFLICT (journal) DO NOTHING RETURNING 1)"
                ).format(_INSERTED, self.identifier, sql.SQL(", ").join(rows))
            )
            found.append(sql.SQL("(SELECT count(*) FROM {})").format(_INSERTED))
        # Fails the statement when a mark did not match: a cast of a text that is no number,
        # made of values known only when it runs, so that planning cannot fold it.
        parts.append(
            sql.SQL(
                "{} AS (INSERT INTO {} (journal, applied_seq) SELECT 'conflict', "
                "CAST(c.found || ' of ' || c.marks || ' marks matched: ' || {} AS bigint) "
                "FROM (SELECT {} AS found, CAST({} AS bigint) AS marks) AS c "
                "WHERE c.found <> c.marks RETURNING 1)"
            ).format(
                _CHECKED,
                self.identifier,
                sql.Literal(CONFLICT_MARKER),
                sql.SQL(" + ").join(found),
                sql.Literal(updates + inserts),
            )
        )
        return sql.SQL("WITH {} ").format(sql.SQL(", ").join(parts))

    def claim(
        self, conn: psycopg.Connection[Any], prefix: str, sources: Sequence[str], owner: str
    ) -> dict[str, tuple[int, frozenset[int]]]:
        """Make ``owner`` the owner of ``sources`` (rows made for those missing) and of every
        row whose name starts with ``prefix``, and read them, in one transaction. A write
        still running that moves one of them is waited for; one that has not yet is refused."""
        with conn.transaction():
            conn.execute(self._claim_new, (owner, list(sources)), prepare=False)
            conn.execute(self._claim_old, (owner, prefix, owner), prepare=False)
            return self.read(conn, prefix)

    def read(
        self, conn: psycopg.Connection[Any], prefix: str
    ) -> dict[str, tuple[int, frozenset[int]]]:
        """Every lane whose name starts with ``prefix``: (applied_seq, applied_extra)."""
        rows = conn.execute(self._select, (prefix,), prepare=False).fetchall()
        return {journal: (seq, frozenset(extra)) for journal, seq, extra in rows}

    def forget(self, conn: psycopg.Connection[Any], prefix: str) -> int:
        """Delete the lanes whose name starts with ``prefix``; how many there were."""
        return conn.execute(self._delete, (prefix,), prepare=False).rowcount

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the table if it is missing, and check it: SchemaError when it cannot be
        created, has other columns, or this role may not use it. Runs in a transaction of its
        own on ``conn`` (a savepoint inside one already open), so that a refused CREATE leaves
        the caller's transaction as it was."""
        for _ in range(3):
            info = self._read(conn)
            if info is not None:
                self._check(conn, info)
                return
            try:
                with conn.transaction():
                    conn.execute(self.create_statement(), prepare=False)
            except _CREATED_MEANWHILE:
                continue
            except _CANNOT_CREATE as error:
                raise SchemaError(self._cannot_create(conn, error)) from None
        info = self._read(conn)
        if info is None:  # created and dropped again, three times: not a race to win
            raise SchemaError(f"the progress table {self._shown(conn)} keeps disappearing")
        self._check(conn, info)

    def _read(self, conn: psycopg.Connection[Any]) -> TableInfo | None:
        try:
            return read_table(conn, PROGRESS_TABLE, self.schema)
        except SchemaError as error:
            if "does not exist" in str(error):
                return None
            raise SchemaError(f"the progress table: {error}") from None

    def _check(self, conn: psycopg.Connection[Any], info: TableInfo) -> None:
        problems = []
        for name, type_name in _COLUMNS.items():
            column = info.column(name)
            if column is None:
                problems.append(f"column {name!r} is missing")
            elif column.type_name != type_name:
                problems.append(f"column {name!r} is {column.type_name}, not {type_name}")
        for column in info.columns:
            if column.name not in _COLUMNS and column.not_null and not column.has_default:
                problems.append(f"column {column.name!r} is NOT NULL without a default")
        if info.column("journal") is not None and frozenset({"journal"}) not in info.unique_keys:
            problems.append("column 'journal' is not its primary key (nor unique)")
        if problems:
            raise SchemaError(
                f"the progress table {self._shown(conn)} is not as writebehind needs it: "
                f"{'; '.join(problems)}. It should be: {self._statements(conn)}"
            )
        missing = [
            privilege
            for (privilege,) in conn.execute(
                "SELECT p FROM unnest(%s::text[]) AS p "
                "WHERE NOT pg_catalog.has_table_privilege(%s::regclass, p)",
                (list(_PRIVILEGES), self.identifier.as_string(conn)),
                prepare=False,
            )
        ]
        if missing:
            raise SchemaError(
                f"the progress table {self._shown(conn)} exists, but this role "
                f"({_current_user(conn)}) lacks {', '.join(missing)} on it; run: "
                f"{self._grant(conn)};"
            )

    def _cannot_create(self, conn: psycopg.Connection[Any], error: psycopg.Error) -> str:
        reason = (error.diag.message_primary or str(error)).strip()
        return (
            f"the progress table {self._shown(conn)} does not exist and this role "
            f"({_current_user(conn)}) cannot create it ({reason}). A role that may create it "
            f"should run: {self._statements(conn)}"
        )

    def _statements(self, conn: psycopg.Connection[Any]) -> str:
        create = self.create_statement().as_string(conn).replace(" IF NOT EXISTS", "", 1)
        return f"{create}; {self._grant(conn)};"

    def _grant(self, conn: psycopg.Connection[Any]) -> str:
        return (
            sql.SQL("GRANT {} ON {} TO {}")
            .format(
                sql.SQL(", ").join(map(sql.SQL, _PRIVILEGES)),
                self.identifier,
                sql.Identifier(_current_user(conn)),
            )
            .as_string(conn)
        )

    def _shown(self, conn: psycopg.Connection[Any]) -> str:
        return self.identifier.as_string(conn)


_UPDATE_CASTS = ("text", "bigint", "bigint[]", "bigint", "bigint[]", "text")
_INSERT_CASTS = ("text", "bigint", "bigint[]", "text")


def _shape(marks: Sequence[ProgressMark]) -> tuple[int, int]:
    """How many marks update a row, and how many insert one (they expect none)."""
    inserts = sum(1 for mark in marks if mark.expected is None)
    return len(marks) - inserts, inserts


def params(marks: Sequence[ProgressMark]) -> list[Any]:
    """The values of the placeholders of upsert() and cte(): the marks that update a row,
    then those that insert one."""
    values: list[Any] = []
    for mark in marks:
        if mark.expected is not None:
            expected_seq, expected_extra = mark.expected
            values += (mark.source, mark.applied_seq, list(mark.applied_extra))
            values += (expected_seq, list(expected_extra), mark.owner)
    for mark in marks:
        if mark.expected is None:
            values += (mark.source, mark.applied_seq, list(mark.applied_extra), mark.owner)
    return values


def is_conflict(error: BaseException) -> bool:
    """Whether ``error`` is the failure of a write whose marks did not match."""
    return isinstance(error, errors.InvalidTextRepresentation) and CONFLICT_MARKER in str(error)


def _current_user(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user", prepare=False).fetchone()
    return str(row[0]) if row else "?"


def ensured(conn: psycopg.Connection[Any], schema: str, *, own: bool) -> ProgressTable:
    """The progress table of ``schema``, made sure of (created if missing, else checked).
    ``own``: the connection is the sink's, and its catalog read can end here, so that a
    table created now is committed at once, for the processes racing to create it."""
    progress = ProgressTable(schema)
    if own:
        conn.commit()
        with autocommit(conn):
            progress.ensure(conn)
    else:
        progress.ensure(conn)
    return progress


def recorded_in(
    progress: Sequence[ProgressMark], table: ProgressTable | None
) -> ProgressTable | None:
    """The progress table to record ``progress`` in (a sink's ``table``), None for no marks;
    checks them, and ValueError for marks given to a sink that records none."""
    if isinstance(progress, tuple) and not progress:
        return None  # the common case, without a journal: nothing to check
    marks = check_marks(progress)
    if not marks:
        return None
    if table is None:
        raise ValueError(
            "progress marks given to a sink that does not record progress: call "
            "track_progress() before open() (or configure())"
        )
    return table


def check_marks(progress: object) -> Sequence[ProgressMark]:
    """``progress`` as given to a write, checked: TypeError or ValueError naming it."""
    if isinstance(progress, (str, bytes)) or not isinstance(progress, Sequence):
        raise TypeError(f"progress must be a sequence of ProgressMark, got {progress!r}")
    sources = set()
    for index, mark in enumerate(progress):
        where = f"progress[{index}]"
        if not isinstance(mark, ProgressMark):
            raise TypeError(f"{where} must be a ProgressMark, got {mark!r}")
        if not isinstance(mark.source, str) or not isinstance(mark.owner, str):
            raise TypeError(f"{where}: source and owner must be str, got {mark!r}")
        if mark.source in sources:
            raise ValueError(f"{where}: source {mark.source!r} is marked twice in one write")
        sources.add(mark.source)
        _check_position(where, mark.applied_seq, mark.applied_extra)
        if mark.expected is not None:
            if not isinstance(mark.expected, tuple) or len(mark.expected) != 2:
                raise TypeError(f"{where}: expected must be (seq, extra) or None, got {mark!r}")
            _check_position(f"{where} expected", *mark.expected)
    return progress


def _check_position(where: str, seq: object, extra: object) -> None:
    if not _is_bigint(seq):
        raise ValueError(f"{where}: seq must be an int within bigint, got {seq!r}")
    if not isinstance(extra, tuple) or not all(map(_is_bigint, extra)):
        raise ValueError(
            f"{where}: extra must be a tuple of ints within bigint, got {_short(extra)}"
        )


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__} {prefix!r}")
    return prefix


def _is_bigint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _BIGINT


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
