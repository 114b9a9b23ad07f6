"""Deferred constraints checked at once: for an eager write inside a caller's transaction.

Django creates every ForeignKey ``DEFERRABLE INITIALLY DEFERRED``, so a row with a dangling
reference is accepted by its savepoint and refused only at COMMIT, which a test's transaction
never reaches. Setting the table's deferrable constraints IMMEDIATE checks what is pending on
them now, in the savepoint, where a failure rolls back the row (and the setting with it); the
constraints that are initially deferred are then set back to DEFERRED.

What is pending may be the caller's own (rows it made out of order, to be fixed before its
COMMIT): the same check runs first, before the row, in a savepoint of its own. If it fails,
the violation is the caller's, that savepoint is rolled back (PostgreSQL then treats those
checks as pending again) and the row is left to COMMIT, as the ORM's own save() would be.
Otherwise the check after the row sees the row's checks alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["deferred_checked"]

_DEFERRABLE = (
    "SELECT n.nspname, c.conname, c.condeferred FROM pg_catalog.pg_constraint AS c "
    "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.connamespace "
    "WHERE c.condeferrable AND (c.conrelid = %(table)s::regclass "
    "OR c.confrelid = %(table)s::regclass) ORDER BY 1, 2"
)


@contextmanager
def deferred_checked(conn: psycopg.Connection[Any], schema: str, table: str) -> Iterator[None]:
    """Around a write inside the transaction open on ``conn``: after it, check the deferrable
    constraints of ``schema.table`` and of the tables referencing it now (raising the
    database's error), unless what was pending before it already failed them."""
    name = sql.Identifier(schema, table).as_string(conn)
    found = conn.execute(_DEFERRABLE, {"table": name}).fetchall()
    if not found:
        yield
        return
    every = sql.SQL(", ").join(sql.Identifier(space, c) for space, c, _ in found)
    initially = [sql.Identifier(space, c) for space, c, deferred in found if deferred]
    try:
        with conn.transaction():  # a savepoint: the caller's pending checks, alone
            _check(conn, every, initially)
    except psycopg.errors.IntegrityError:
        yield  # the caller's own violation: the row is checked at COMMIT
        return
    yield
    _check(conn, every, initially)


def _check(conn: psycopg.Connection[Any], every: sql.Composable, initially: list[Any]) -> None:
    conn.execute(sql.SQL("SET CONSTRAINTS {} IMMEDIATE").format(every))
    if initially:
        conn.execute(sql.SQL("SET CONSTRAINTS {} DEFERRED").format(sql.SQL(", ").join(initially)))
