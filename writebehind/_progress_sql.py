"""The progress table: how far each journal lane is applied, committed with the rows it covers.

``writebehind_progress`` lives in the schema of the target table, one row per lane::

    journal text PRIMARY KEY, applied_seq bigint NOT NULL,
    applied_extra bigint[] NOT NULL DEFAULT '{}', updated_at timestamptz NOT NULL DEFAULT now()

A write upserts one row per mark in the transaction of its batch, so the recorded progress is
exactly what the table holds. Nothing here is prepared on the server (PgBouncer in transaction
mode cannot follow a prepared statement): every statement runs with ``prepare=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors, sql

from ._catalog import TableInfo, read_table
from ._sink import ProgressMark
from .errors import SchemaError

__all__ = ["PROGRESS_TABLE", "ProgressTable", "check_marks", "check_prefix", "params"]

PROGRESS_TABLE = "writebehind_progress"

# name -> type as the catalog spells it (regtype::text of the base type)
_COLUMNS = {
    "journal": "text",
    "applied_seq": "bigint",
    "applied_extra": "bigint[]",
    "updated_at": "timestamp with time zone",
}
_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
# The data-modifying CTE that carries the progress in front of a batch's INSERT. A name of its
# own: an unqualified reference to it could only come from the statement itself.
_CTE = sql.Identifier("writebehind_progress_upsert")
_BIGINT = range(-(2**63), 2**63)
# Another process creating the table at the same moment: it exists now, look again.
_CREATED_MEANWHILE = (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject)
_CANNOT_CREATE = (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)


class ProgressTable:
    """The statements on one schema's progress table."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.identifier = sql.Identifier(schema, PROGRESS_TABLE)
        self._ctes: dict[int, bytes] = {}
        self._upserts: dict[int, bytes] = {}
        self._select = sql.SQL(
            "SELECT journal, applied_seq, applied_extra FROM {} WHERE starts_with(journal, %s)"
        ).format(self.identifier)
        self._delete = sql.SQL("DELETE FROM {} WHERE starts_with(journal, %s)").format(
            self.identifier
        )

    def create_statement(self) -> sql.Composed:
        """The CREATE TABLE of the progress table (IF NOT EXISTS)."""
        return sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (journal text PRIMARY KEY, "
            "applied_seq bigint NOT NULL, applied_extra bigint[] NOT NULL DEFAULT '{{}}', "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(self.identifier)

    def _upsert(self, values: Sequence[sql.Composable]) -> sql.Composed:
        return sql.SQL(
            "INSERT INTO {} (journal, applied_seq, applied_extra) VALUES {} "
            "ON CONFLICT (journal) DO UPDATE SET applied_seq = EXCLUDED.applied_seq, "
            "applied_extra = EXCLUDED.applied_extra, updated_at = now()"
        ).format(self.identifier, sql.SQL(", ").join(values))

    def upsert(self, count: int) -> bytes:
        """The upsert of ``count`` marks, with placeholders for ``params()``."""
        return _cached(self._upserts, count, lambda: self._placeholders(count))

    def cte(self, count: int) -> bytes:
        """``WITH ... AS (<upsert of count marks>) ``, to put in front of an INSERT whose
        placeholders come after the marks' ``params()``."""
        return _cached(
            self._ctes,
            count,
            lambda: sql.SQL("WITH {} AS ({}) ").format(_CTE, self._placeholders(count)),
        )

    def _placeholders(self, count: int) -> sql.Composed:
        return self._upsert([_PLACEHOLDER_ROW] * count)

    def literal_cte(self, marks: Sequence[ProgressMark], conn: psycopg.Connection[Any]) -> bytes:
        """As cte() with the values written in: for a statement sent without parameters (in
        one string with others, as COPY's ``INSERT ...; COMMIT``)."""
        rows = [
            sql.SQL("(CAST({} AS text), CAST({} AS bigint), CAST({} AS bigint[]))").format(
                sql.Literal(source), sql.Literal(seq), sql.Literal(list(extra))
            )
            for source, seq, extra in marks
        ]
        return sql.SQL("WITH {} AS ({}) ").format(_CTE, self._upsert(rows)).as_bytes(conn)

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


def _cached(built: dict[int, bytes], count: int, build: Callable[[], sql.Composed]) -> bytes:
    statement = built.get(count)
    if statement is None:
        statement = build().as_bytes(None)
        if len(built) < 64:  # marks per write vary little
            built[count] = statement
    return statement


_PLACEHOLDER_ROW = sql.SQL("(CAST(%s AS text), CAST(%s AS bigint), CAST(%s AS bigint[]))")


def params(marks: Sequence[ProgressMark]) -> list[Any]:
    """The values of the placeholders of upsert() and cte(), mark after mark."""
    values: list[Any] = []
    for source, seq, extra in marks:
        values += (source, seq, list(extra))
    return values


def _current_user(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user", prepare=False).fetchone()
    return str(row[0]) if row else "?"


def check_marks(progress: object) -> Sequence[ProgressMark]:
    """``progress`` as given to a write, checked: TypeError or ValueError naming it."""
    if isinstance(progress, (str, bytes)) or not isinstance(progress, Sequence):
        raise TypeError(f"progress must be a sequence of (source, seq, extra), got {progress!r}")
    sources = set()
    for index, mark in enumerate(progress):
        where = f"progress[{index}]"
        if not isinstance(mark, tuple) or len(mark) != 3:
            raise TypeError(f"{where} must be a tuple (source, seq, extra), got {mark!r}")
        source, seq, extra = mark
        if not isinstance(source, str):
            raise TypeError(f"{where}: source must be a str, got {source!r}")
        if source in sources:
            raise ValueError(f"{where}: source {source!r} is marked twice in one write")
        sources.add(source)
        if not _is_bigint(seq):
            raise ValueError(f"{where}: seq must be an int within bigint, got {seq!r}")
        if not isinstance(extra, tuple) or not all(map(_is_bigint, extra)):
            raise ValueError(
                f"{where}: extra must be a tuple of ints within bigint, got {_short(extra)}"
            )
    return progress


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__} {prefix!r}")
    return prefix


def _is_bigint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in _BIGINT


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"
