"""Deferred constraints checked at once: for an eager write inside a caller's transaction.

Django creates every ForeignKey ``DEFERRABLE INITIALLY DEFERRED``, so a row with a dangling
reference is accepted by its savepoint and refused only at COMMIT, which a test's transaction
never reaches. Setting the table's deferrable constraints IMMEDIATE checks what is pending on
them now, in the savepoint, where a failure rolls back the row (and the setting with it); the
constraints that are initially deferred are then set back to DEFERRED.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

__all__ = ["check_deferred_now"]

_DEFERRABLE = (
    "SELECT n.nspname, c.conname, c.condeferred FROM pg_catalog.pg_constraint AS c "
    "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.connamespace "
    "WHERE c.condeferrable AND (c.conrelid = %(table)s::regclass "
    "OR c.confrelid = %(table)s::regclass) ORDER BY 1, 2"
)


def check_deferred_now(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    """Check now, on ``conn``, the deferrable constraints of ``schema.table`` and of the
    tables that reference it; raise the database's error for one that fails."""
    name = sql.Identifier(schema, table).as_string(conn)
    found = conn.execute(_DEFERRABLE, {"table": name}).fetchall()
    if not found:
        return
    every = [sql.Identifier(space, constraint) for space, constraint, _ in found]
    conn.execute(sql.SQL("SET CONSTRAINTS {} IMMEDIATE").format(sql.SQL(", ").join(every)))
    deferred = [sql.Identifier(space, c) for space, c, initially in found if initially]
    if deferred:
        conn.execute(sql.SQL("SET CONSTRAINTS {} DEFERRED").format(sql.SQL(", ").join(deferred)))
