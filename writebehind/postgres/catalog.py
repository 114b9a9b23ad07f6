"""What PostgreSQL's catalog says about the target table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..errors import SchemaError


@dataclass(frozen=True)
class Column:
    name: str
    type_name: str
    """The base type's name (a domain's underlying type), e.g. ``jsonb``."""
    has_default: bool
    """A default, identity or generated value: left out of the written columns by default."""
    generated: bool
    """A generated column, or an identity GENERATED ALWAYS: an INSERT cannot write it."""
    not_null: bool = False
    base_type: tuple[str, str] = ("pg_catalog", "text")
    """The base type's schema and name as the catalog spells them (``_text`` for text[]): what
    a value sent in another type is cast to, built with sql.Identifier."""
    category: str = ""
    """The base type's ``typcategory``: ``S`` for the string types (text, varchar, char,
    citext), into which a value of any type is written as that type's text."""


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: tuple[Column, ...]
    unique_keys: tuple[frozenset[str], ...]
    """Column sets of the unique indexes that ON CONFLICT can use (plain, immediate, total)."""
    nulls_not_distinct: frozenset[frozenset[str]] = frozenset()
    """Those of ``unique_keys`` whose index treats NULLs as equal (PostgreSQL 15+)."""

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


_TABLE_QUERY = """
SELECT c.oid, n.nspname, c.relname, c.relkind
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass(%s)
"""

_COLUMNS_QUERY = """
SELECT a.attnum, a.attname,
       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)::regtype::text,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
       a.attgenerated <> '' OR a.attidentity = 'a',
       a.attnotnull, bn.nspname, b.typname, b.typcategory
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_type b
  ON b.oid = (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END)
JOIN pg_catalog.pg_namespace bn ON bn.oid = b.typnamespace
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_UNIQUE_QUERY = """
SELECT i.indkey::int2[], i.indnkeyatts,
       coalesce((pg_catalog.to_jsonb(i) ->> 'indnullsnotdistinct')::bool, false)
FROM pg_catalog.pg_index i
WHERE i.indrelid = %s AND i.indisunique AND i.indimmediate AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL
"""


def read_table(conn: psycopg.Connection[Any], table: str, schema: str | None) -> TableInfo:
    """Look ``table`` up (in ``schema``, else along the search_path). SchemaError if absent."""
    identifier = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    shown = f"{schema}.{table}" if schema else table
    with conn.cursor() as cur:
        cur.execute(_TABLE_QUERY, (identifier.as_string(conn),))
        found = cur.fetchone()
        if found is None:
            where = f"schema {schema!r}" if schema else "the search_path"
            message = f"table {shown!r} does not exist in {where}"
            if not schema and "." in table:
                # The name is one identifier, quoted: "app.events" is not events in app.
                in_schema, _, name = table.partition(".")
                message += f"; did you mean schema={in_schema!r}, table={name!r}?"
            raise SchemaError(message)
        oid, schema_name, table_name, kind = found
        if kind not in ("r", "p"):
            raise SchemaError(f"{shown!r} is not a table (relkind {kind!r})")
        cur.execute(_COLUMNS_QUERY, (oid,))
        rows = cur.fetchall()
        names_by_number = {number: name for number, name, *_ in rows}
        columns = tuple(
            Column(name, type_name, has_default, generated, not_null, (base_schema, base), kind)
            for _, name, type_name, has_default, generated, not_null, base_schema, base, kind in (
                rows
            )
        )
        cur.execute(_UNIQUE_QUERY, (oid,))
        indexes = [
            (frozenset(names_by_number[number] for number in numbers[:key_count]), equal_nulls)
            for numbers, key_count, equal_nulls in cur.fetchall()
        ]
    return TableInfo(
        str(schema_name),
        str(table_name),
        columns,
        tuple(names for names, _ in indexes),
        frozenset(names for names, equal_nulls in indexes if equal_nulls),
    )


def check_key(info: TableInfo, key: Sequence[str]) -> None:
    """SchemaError unless ``key`` names columns covered exactly by a unique index."""
    for name in key:
        if info.column(name) is None:
            raise SchemaError(f"key column {name!r} is not a column of {info.qualified_name}")
    if frozenset(key) not in info.unique_keys:
        raise SchemaError(
            f"key {tuple(key)!r} of {info.qualified_name} has no primary key or unique index "
            "on exactly these columns, which ON CONFLICT needs"
        )


class WrittenColumns(tuple[Column, ...]):
    """The columns each row must give, in table order; ``table_columns`` holds all of the
    table's, so that a row naming one left out can be told why."""

    table_columns: tuple[Column, ...]

    def __new__(
        cls, columns: Iterable[Column], table_columns: tuple[Column, ...]
    ) -> WrittenColumns:
        self = super().__new__(cls, columns)
        self.table_columns = table_columns
        return self


def written_columns(
    info: TableInfo, key: Sequence[str], requested: Sequence[str] | None
) -> WrittenColumns:
    """The columns each row must give, in table order: the key, plus ``requested`` if given,
    else every column without a default value. SchemaError for a column that cannot be
    written (unknown, or generated)."""
    for name in key:
        column = info.column(name)
        if column is not None and column.generated:
            raise SchemaError(
                f"key column {name!r} of {info.qualified_name} is generated and cannot be written"
            )
    if requested is None:
        wanted = set(key) | {c.name for c in info.columns if not c.has_default}
    else:
        for name in requested:
            column = info.column(name)
            if column is None:
                raise SchemaError(f"column {name!r} is not a column of {info.qualified_name}")
            if column.generated:
                raise SchemaError(
                    f"column {name!r} of {info.qualified_name} is generated and cannot be written"
                )
        wanted = set(key) | set(requested)
    return WrittenColumns(
        (column for column in info.columns if column.name in wanted), info.columns
    )


def unwritable(
    info: TableInfo, written: frozenset[str], columns: Sequence[str] | None
) -> list[str]:
    """Why no row of the ``written`` columns could be inserted into the table: one message per
    NOT NULL column without a default that ``columns`` (as given to the sink) leaves out."""
    return [
        f"column {column.name!r} of {info.qualified_name} is NOT NULL without a default, "
        f"and columns={list(columns or ())} leaves it out: every row would be refused"
        for column in info.columns
        if column.not_null
        and not column.has_default
        and not column.generated
        and column.name not in written
    ]
