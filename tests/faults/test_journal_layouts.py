"""A process journals rows while the table is locked and is killed with SIGKILL; then the world
changes (a redeploy with other ``columns=``, a migration that reorders, adds or drops columns)
and another process replays the journal. Every value goes to the column it was put for, or its
row goes to ``on_failure`` with a SchemaError naming the column: never a value in another
column, never a retry loop."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import create
from tests.faults.conftest import Failures, tagged
from writebehind import Journal, PostgresUpsert, SchemaError, WriteBehindQueue

pytestmark = pytest.mark.fault

CHILD = str(Path(__file__).with_name("layout_child.py"))
ROWS = 1000


def journal_while_locked(
    dsn: str, db: psycopg.Connection[Any], table: str, journal: Path, columns: Sequence[str]
) -> None:
    """A child journals ROWS rows of ``columns`` while ``table`` is locked (none is written),
    and is killed; its write left waiting on the lock is ended too."""
    conninfo, application = tagged(dsn, "layout")
    with psycopg.connect(dsn) as locker:
        locker.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
        child = subprocess.Popen(
            [sys.executable, CHILD, conninfo, table, str(journal), ",".join(columns), str(ROWS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        child.kill()
        _, stderr = child.communicate(timeout=30)
        assert line == "put\n", stderr
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application,),
        )
        locker.rollback()


def replay(
    dsn: str, table: str, journal: Path, columns: Sequence[str] | None
) -> tuple[WriteBehindQueue, Failures, float]:
    failures = Failures()
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table, "k", columns=columns),
        registry=None,
        on_failure=failures,
        journal=Journal(journal),
    )
    started = time.monotonic()
    wb.start()
    assert wb.flush(timeout=60), "the replay did not finish"
    took = time.monotonic() - started
    wb.close(timeout=30)
    return wb, failures, took


def rows(db: psycopg.Connection[Any], table: str, columns: str) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT {} FROM {} ORDER BY k").format(sql.SQL(columns), sql.Identifier(table))
    return db.execute(query).fetchall()


def left(journal: Path, table: str) -> list[str]:
    parent = journal / table
    return (
        [p.name for p in parent.iterdir() if not p.name.startswith(".")] if parent.exists() else []
    )


def test_a_redeploy_with_other_columns_writes_each_value_to_its_own_column(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k int PRIMARY KEY, a text, b text, c text")
    journal = tmp_path / "journal"
    journal_while_locked(dsn, db, table_name, journal, ["k", "a", "b"])
    wb, failures, took = replay(dsn, table_name, journal, ["k", "a", "c"])
    print(f"other columns=: {ROWS} rows replayed by name in {took:.2f}s")
    assert failures.rows() == []
    assert rows(db, table_name, "k, a, b, c") == [(k, f"a{k}", f"b{k}", None) for k in range(ROWS)]
    m = wb.metrics()
    assert (m.total_replayed, m.total_persisted, m.total_failed, m.total_corrupt) == (
        ROWS,
        ROWS,
        0,
        0,
    )
    assert left(journal, table_name) == []


def test_columns_reordered_by_a_migration_keep_their_values(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k int PRIMARY KEY, a text, b text")
    journal = tmp_path / "journal"
    journal_while_locked(dsn, db, table_name, journal, ["k", "a", "b"])
    ident = sql.Identifier(table_name)
    db.execute(sql.SQL("ALTER TABLE {} DROP COLUMN a").format(ident))
    db.execute(sql.SQL("ALTER TABLE {} ADD COLUMN a text").format(ident))  # now k, b, a
    _, failures, took = replay(dsn, table_name, journal, ["k", "a", "b"])
    print(f"reordered columns: {ROWS} rows replayed by name in {took:.2f}s")
    assert failures.rows() == []
    assert rows(db, table_name, "k, a, b") == [(k, f"a{k}", f"b{k}") for k in range(ROWS)]


def test_a_nullable_column_added_since_is_written_as_null(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k int PRIMARY KEY, a text, b text")
    journal = tmp_path / "journal"
    journal_while_locked(dsn, db, table_name, journal, ["k", "a", "b"])
    ident = sql.Identifier(table_name)
    db.execute(sql.SQL("ALTER TABLE {} ADD COLUMN c text").format(ident))
    db.execute(sql.SQL("ALTER TABLE {} ADD COLUMN d text DEFAULT 'dflt'").format(ident))
    _, failures, took = replay(dsn, table_name, journal, None)  # default columns: k, a, b, c
    print(f"a column added: {ROWS} rows replayed in {took:.2f}s")
    assert failures.rows() == []
    assert rows(db, table_name, "k, a, b, c, d") == [
        (k, f"a{k}", f"b{k}", None, "dflt") for k in range(ROWS)
    ]


@pytest.mark.parametrize("migration", ["drop b", "add NOT NULL d"])
def test_rows_the_table_cannot_take_any_more_go_to_on_failure_naming_the_column(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path, migration: str
) -> None:
    create(db, table_name, "k int PRIMARY KEY, a text, b text")
    journal = tmp_path / "journal"
    journal_while_locked(dsn, db, table_name, journal, ["k", "a", "b"])
    ident = sql.Identifier(table_name)
    if migration == "drop b":
        db.execute(sql.SQL("ALTER TABLE {} DROP COLUMN b").format(ident))
        columns, named = ["k", "a"], "'b'"
    else:
        db.execute(sql.SQL("ALTER TABLE {} ADD COLUMN d text NOT NULL").format(ident))
        columns, named = ["k", "a", "b", "d"], "'d'"
    wb, failures, took = replay(dsn, table_name, journal, columns)
    print(f"{migration}: {ROWS} rows handed over in {took:.2f}s")
    given_up: list[Mapping[str, Any]] = failures.rows()
    assert sorted(row["k"] for row in given_up) == list(range(ROWS))
    assert all(
        dict(row) == {"k": row["k"], "a": f"a{row['k']}", "b": f"b{row['k']}"} for row in given_up
    )
    errors = failures.errors()
    assert all(isinstance(error, SchemaError) and named in str(error) for error in errors), errors[
        0
    ]
    m = wb.metrics()
    assert (m.total_failed, m.total_persisted, m.total_retries) == (ROWS, 0, 0)
    assert rows(db, table_name, "k") == []
    assert left(journal, table_name) == []  # handed over: done with, as far as the journal goes
    # The next process finds nothing to replay: nothing loops.
    again, more, _ = replay(dsn, table_name, journal, columns)
    assert more.rows() == [] and again.metrics().total_replayed == 0


def _by_key(given_up: list[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    return [(int(row["k"]), row) for row in given_up]
