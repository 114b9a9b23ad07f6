"""What a row does to an existing row of its key: update, ignore, some columns, versions, or
append, on PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named, select
from writebehind import PostgresUpsert, SchemaError, WriteBehindQueue

# Every guarantee holds for every write method.
pytestmark = pytest.mark.usefixtures("every_method")

Failure = tuple[list[Mapping[str, Any]], BaseException]


def queue(sink: PostgresUpsert, **options: Any) -> WriteBehindQueue:
    return WriteBehindQueue(sink, registry=None, **options)


def test_ignore_keeps_the_first_value_put_within_and_across_batches(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v text")
    with queue(PostgresUpsert(dsn, table_name, "id", on_conflict="ignore")) as wb:
        for v in ("first", "second", "third"):  # one batch
            wb.put({"id": 1, "v": v})
        assert wb.flush(timeout=30)
        wb.put({"id": 1, "v": "later"})  # another batch
        wb.put({"id": 2, "v": "new"})
        assert wb.flush(timeout=30)
        m = wb.metrics()
    assert select(db, table_name) == [(1, "first"), (2, "new")]
    assert (m.total_persisted, m.total_failed) == (5, 0)


def test_update_columns_leave_the_other_columns_as_they_were(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, first_seen text, last_seen text")
    sink = PostgresUpsert(dsn, table_name, "id", update_columns=["last_seen"])
    with queue(sink) as wb:
        wb.put({"id": 1, "first_seen": "mon", "last_seen": "mon"})
        assert wb.flush(timeout=30)
        wb.put({"id": 1, "first_seen": "tue", "last_seen": "tue"})
    assert select(db, table_name) == [(1, "mon", "tue")]


def test_columns_an_update_leaves_alone_keep_the_first_put_inside_a_batch_too(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    """Rows put one after another, in one batch or in several, leave the same table."""
    create(db, table_name, "id int PRIMARY KEY, first_page text, last_page text, version int")
    sink = PostgresUpsert(
        dsn, table_name, "id", update_columns=["last_page", "version"], version_column="version"
    )
    puts = [
        {"id": 1, "first_page": "/a", "last_page": "/a", "version": 1},  # new key: inserted
        {"id": 1, "first_page": "/b", "last_page": "/b", "version": 2},  # updates last_page
        {"id": 2, "first_page": "/x", "last_page": "/x", "version": 5},  # new key: inserted
        {"id": 2, "first_page": "/y", "last_page": "/y", "version": 4},  # older: no change
        {"id": 1, "first_page": "/c", "last_page": "/c", "version": 3},  # updates last_page
    ]
    with queue(sink, batch_size=100) as wb:
        wb.put_many(puts)  # one batch
    in_one_batch = select(db, table_name)
    db.execute(named("TRUNCATE {}", table_name))
    with queue(PostgresUpsert(dsn, table_name, "id", update_columns=["last_page"])) as wb:
        wb.put_many([puts[0], puts[1]])
        assert wb.flush(timeout=30)
        wb.put(puts[4])
        assert wb.flush(timeout=30)
        m = wb.metrics()
    assert in_one_batch == [(1, "/a", "/c", 3), (2, "/x", "/x", 5)]
    assert select(db, table_name, "id, first_page, last_page") == [(1, "/a", "/c")]
    assert (m.total_persisted, m.total_failed) == (3, 0)


def test_an_older_version_never_replaces_a_newer_one(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, v text, version bigint")
    sink = PostgresUpsert(dsn, table_name, "id", version_column="version")
    with queue(sink) as wb:
        # One batch: the highest version wins, whatever the order of the puts.
        wb.put({"id": 1, "v": "b", "version": 2})
        wb.put({"id": 1, "v": "c", "version": 3})
        wb.put({"id": 1, "v": "a", "version": 1})
        wb.put({"id": 2, "v": "x", "version": 5})
        assert wb.flush(timeout=30)
        assert select(db, table_name) == [(1, "c", 3), (2, "x", 5)]
        # Later batches: an older or equal version (a late or retried write) changes nothing.
        wb.put({"id": 1, "v": "old", "version": 2})
        wb.put({"id": 2, "v": "same", "version": 5})
        assert wb.flush(timeout=30)
        assert select(db, table_name) == [(1, "c", 3), (2, "x", 5)]
        wb.put({"id": 2, "v": "newer", "version": 6})
    assert select(db, table_name) == [(1, "c", 3), (2, "newer", 6)]


@pytest.mark.parametrize("coalesce", [False, True], ids=["in a batch", "coalesce=True"])
def test_equal_versions_put_together_keep_the_first_put(
    dsn: str, db: psycopg.Connection[Any], table_name: str, coalesce: bool
) -> None:
    # As in the table, where an equal version changes nothing: the first put of a version
    # is the one kept, whether the rows meet in one batch or in the queue.
    create(db, table_name, "id int PRIMARY KEY, v text, version bigint")
    sink = PostgresUpsert(dsn, table_name, "id", version_column="version")
    with queue(sink, coalesce=coalesce, flush_interval=60) as wb:
        wb.put({"id": 1, "v": "first", "version": 7})
        wb.put({"id": 1, "v": "second", "version": 7})
        wb.put({"id": 1, "v": "older", "version": 6})
        wb.put({"id": 2, "v": "first", "version": None})
        wb.put({"id": 2, "v": "second", "version": None})
        assert wb.flush(timeout=30)
        m = wb.metrics()
    assert select(db, table_name) == [(1, "first", 7), (2, "first", None)]
    assert (m.total_persisted, m.total_batches) == (5, 1)


def test_without_a_key_every_row_is_appended(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "n int NOT NULL CHECK (n >= 0), what text")  # no unique index
    failures: list[Failure] = []
    sink = PostgresUpsert(dsn, table_name, key=None)
    with queue(sink, on_failure=lambda rows, error: failures.append((rows, error))) as wb:
        for n in range(10):
            wb.put({"n": n % 3, "what": "click"})  # repeated values are separate rows
        wb.put({"n": -1, "what": "refused"})
    assert sorted(select(db, table_name, "n")) == sorted((n % 3,) for n in range(10))
    assert [rows for rows, _ in failures] == [[{"n": -1, "what": "refused"}]]


def test_conflict_options_are_checked_when_built_and_against_the_table(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    for options, message in (
        ({"on_conflict": "replace"}, "on_conflict must be 'update' or 'ignore'"),
        ({"on_conflict": "ignore", "update_columns": ["v"]}, "updates nothing"),
        ({"update_columns": ["id"]}, "'id' is a key column"),
        ({"version_column": "id"}, "'id' is a key column"),
        ({"update_columns": ["v"], "version_column": "version"}, "must be among update_columns"),
    ):
        with pytest.raises(ValueError, match=message):
            PostgresUpsert(dsn, table_name, "id", **options)
    with pytest.raises(ValueError, match="need a key"):
        PostgresUpsert(dsn, table_name, None, on_conflict="ignore")
    create(db, table_name, "id int PRIMARY KEY, v text, version bigint DEFAULT 0")
    for options in ({"update_columns": ["nope"]}, {"version_column": "version"}):
        with (
            queue(PostgresUpsert(dsn, table_name, "id", **options)) as wb,
            pytest.raises(SchemaError, match="cannot set it"),
        ):
            wb.put({"id": 1, "v": "a"})


def test_merge_adds_counts_and_keeps_the_extremes_in_a_batch_and_in_the_table(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(
        db,
        table_name,
        "page text PRIMARY KEY, views bigint CHECK (views < 100), first_seen int, last_seen int",
    )
    failures: list[Failure] = []
    sink = PostgresUpsert(
        dsn,
        table_name,
        "page",
        merge={"views": "add", "first_seen": "min", "last_seen": "max"},
    )
    with queue(sink, on_failure=lambda rows, error: failures.append((rows, error))) as wb:
        for seen in (5, 9, 7):  # one batch: combined before the statement
            wb.put({"page": "/a", "views": 1, "first_seen": seen, "last_seen": seen})
        wb.put({"page": "/b", "views": None, "first_seen": None, "last_seen": 1})
        assert wb.flush(timeout=30)
        assert select(db, table_name) == [("/a", 3, 5, 9), ("/b", None, None, 1)]
        wb.put({"page": "/a", "views": 2, "first_seen": 3, "last_seen": 4})  # a later batch
        wb.put({"page": "/b", "views": 4, "first_seen": 2, "last_seen": None})
        assert wb.flush(timeout=30)
        assert select(db, table_name) == [("/a", 5, 3, 9), ("/b", 4, 2, 1)]
        for _ in range(2):  # together over the CHECK: given up as the one row they make
            wb.put({"page": "/c", "views": 60, "first_seen": 1, "last_seen": 1})
    assert [rows for rows, _ in failures] == [
        [{"page": "/c", "views": 120, "first_seen": 1, "last_seen": 1}]
    ]
    m = wb.metrics()
    assert (m.total_persisted, m.total_failed) == (6, 2)


def test_merge_options_are_checked(dsn: str, db: psycopg.Connection[Any], table_name: str) -> None:
    for options, message in (
        ({"merge": {"v": "sum"}}, "must be 'add', 'max' or 'min'"),
        ({"merge": {"v": "add"}, "on_conflict": "ignore"}, "updates nothing"),
        ({"merge": {"id": "add"}}, "'id' is a key column"),
        ({"merge": {"v": "add"}, "update_columns": ["t"]}, "must be among update_columns"),
        ({"merge": {"v": "max"}, "version_column": "v"}, "do not combine"),
    ):
        with pytest.raises(ValueError, match=message):
            PostgresUpsert(dsn, table_name, "id", **options)
    with pytest.raises(ValueError, match="merge needs a key"):
        PostgresUpsert(dsn, table_name, None, merge={"v": "add"})
    create(db, table_name, "id int PRIMARY KEY, v int, t text")
    with (
        queue(PostgresUpsert(dsn, table_name, "id", merge={"t": "add"})) as wb,
        pytest.raises(SchemaError, match="'t'.* is text, not a number"),
    ):
        wb.put({"id": 1, "v": 1, "t": "x"})
