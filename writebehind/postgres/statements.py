"""The SQL of a write, composed with psycopg.sql: what happens on a conflict is decided here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

__all__ = ["ConflictRule", "delete_from", "delete_statement", "insert_from", "insert_statement"]

# The name the target table goes by in ON CONFLICT ... WHERE: the existing row.
_EXISTING = sql.Identifier("existing")


@dataclass(frozen=True)
class ConflictRule:
    """What a row does to an existing row of its key.

    ``key`` empty: no conflict target, a plain INSERT (append-only). ``ignore``: DO NOTHING.
    Otherwise DO UPDATE SET each of ``update_columns`` to the row's value; with
    ``version_column``, only where the existing row's version is lower (or NULL); a column
    of ``merge`` is combined with the existing value (NULL counts as no value).
    """

    key: tuple[str, ...]
    ignore: bool = False
    update_columns: tuple[str, ...] = ()
    version_column: str | None = None
    merge: tuple[tuple[str, str], ...] = ()
    """(column, "add" | "max" | "min"): combined with the existing value instead of set."""


def insert_statement(
    schema: str, table: str, columns: Sequence[str], rule: ConflictRule
) -> sql.Composed:
    """``INSERT INTO schema.table (columns) VALUES (%s, ...)`` and its ON CONFLICT clause."""
    values = sql.SQL("VALUES ({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    return insert_from(schema, table, columns, rule, values)


def insert_from(
    schema: str,
    table: str,
    columns: Sequence[str],
    rule: ConflictRule,
    source: sql.Composable,
) -> sql.Composed:
    """``INSERT INTO schema.table (columns) <source>`` and its ON CONFLICT clause; ``source``
    is a VALUES list or a SELECT giving the columns in order."""
    insert = sql.SQL("INSERT INTO {} AS {} ({}) {}").format(
        sql.Identifier(schema, table),
        _EXISTING,
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        source,
    )
    if not rule.key:
        return insert
    target = sql.SQL(", ").join(map(sql.Identifier, rule.key))
    if rule.ignore or not rule.update_columns:
        return sql.SQL("{} ON CONFLICT ({}) DO NOTHING").format(insert, target)
    merges = dict(rule.merge)
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), _new_value(name, merges.get(name)))
        for name in rule.update_columns
    )
    update = sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(insert, target, assignments)
    if rule.version_column is None:
        return update
    version = sql.Identifier(rule.version_column)
    # Strictly newer: a retried or late write of the same version changes nothing.
    return sql.SQL("{} WHERE {}.{} IS NULL OR {}.{} < EXCLUDED.{}").format(
        update, _EXISTING, version, _EXISTING, version, version
    )


def delete_statement(
    schema: str, table: str, key: Sequence[str], version_column: str | None
) -> sql.Composed:
    """``DELETE FROM schema.table WHERE`` the key is ``%s, ...`` (and, with
    ``version_column``, the existing version is lower than one more ``%s``)."""
    matches: list[sql.Composable] = [
        sql.SQL("{}.{} = {}").format(_EXISTING, sql.Identifier(name), sql.Placeholder())
        for name in key
    ]
    if version_column is not None:
        matches.append(_older(version_column, sql.Placeholder()))
    return sql.SQL("DELETE FROM {} AS {} WHERE {}").format(
        sql.Identifier(schema, table), _EXISTING, sql.SQL(" AND ").join(matches)
    )


def delete_from(
    schema: str,
    table: str,
    key: Sequence[str],
    version_column: str | None,
    source: sql.Composable,
) -> sql.Composed:
    """``DELETE FROM schema.table`` the rows whose key is in ``source`` (a SELECT giving the
    key columns in order, then the version with ``version_column``: a row is deleted only
    where its version is lower, as an update only applies to a lower version)."""
    names = [sql.Identifier(f"d{index}") for index in range(len(key))]
    matches: list[sql.Composable] = [
        sql.SQL("{}.{} = d.{}").format(_EXISTING, sql.Identifier(column), alias)
        for column, alias in zip(key, names, strict=True)
    ]
    if version_column is not None:
        names.append(sql.Identifier("dv"))
        matches.append(_older(version_column, sql.SQL("d.dv")))
    return sql.SQL("DELETE FROM {} AS {} USING ({}) AS d({}) WHERE {}").format(
        sql.Identifier(schema, table),
        _EXISTING,
        source,
        sql.SQL(", ").join(names),
        sql.SQL(" AND ").join(matches),
    )


def _older(version_column: str, than: sql.Composable) -> sql.Composable:
    # The version rule of updates: strictly older, or no version at all.
    version = sql.SQL("{}.{}").format(_EXISTING, sql.Identifier(version_column))
    return sql.SQL("({} IS NULL OR {} < {})").format(version, version, than)


def _new_value(column: str, how: str | None) -> sql.Composable:
    existing = sql.SQL("{}.{}").format(_EXISTING, sql.Identifier(column))
    incoming = sql.SQL("EXCLUDED.{}").format(sql.Identifier(column))
    if how is None:
        return incoming
    if how == "add":  # a NULL on either side is no value, not an unknown sum
        return sql.SQL("COALESCE({} + {}, {}, {})").format(existing, incoming, existing, incoming)
    function = sql.SQL("GREATEST" if how == "max" else "LEAST")  # both skip NULLs
    return sql.SQL("{}({}, {})").format(function, existing, incoming)
