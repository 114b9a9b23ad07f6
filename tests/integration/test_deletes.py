"""Deletes written behind, on PostgreSQL: in put order with their key's upserts, in one batch
or across batches, with coalescing, under every conflict rule, on every write method."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import PrivateServer, create, named, select, wait_until, waiting_on_a_lock
from writebehind import PostgresUpsert, QueueFull, WriteBehindQueue

pytestmark = pytest.mark.usefixtures("every_method")

Failure = tuple[list[Mapping[str, Any]], BaseException]
Op = tuple[str, dict[str, Any]]


def queue(sink: PostgresUpsert, **options: Any) -> WriteBehindQueue:
    options.setdefault("registry", None)
    return WriteBehindQueue(sink, **options)


def _ops(seed: int, versioned: bool) -> list[Op]:
    """Puts and deletes of a few keys, in a random order: many of each key in one batch."""
    rng = random.Random(seed)
    ops: list[Op] = []
    for step in range(240):
        k = rng.randrange(6)
        version = rng.randrange(1, 40) if versioned else step
        if rng.random() < 0.3:
            ops.append(("delete", {"k": k, "ver": version} if versioned else {"k": k}))
        else:
            ops.append(("put", {"k": k, "n": rng.randrange(1, 9), "ver": version}))
    return ops


def _expected(ops: list[Op], rule: str) -> list[tuple[Any, ...]]:
    """What the operations leave, applied one by one as the rule says."""
    table: dict[int, tuple[int, int]] = {}
    for kind, row in ops:
        k = row["k"]
        held = table.get(k)
        if kind == "delete":
            if held is not None and (rule != "version" or held[1] < row["ver"]):
                del table[k]
        elif held is None or rule == "update":
            table[k] = (row["n"], row["ver"])
        elif rule == "add":
            table[k] = (held[0] + row["n"], row["ver"])
        elif rule == "version" and held[1] < row["ver"]:
            table[k] = (row["n"], row["ver"])
    return [(k, n, ver) for k, (n, ver) in sorted(table.items())]


RULES: dict[str, dict[str, Any]] = {
    "update": {},
    "ignore": {"on_conflict": "ignore"},
    "add": {"merge": {"n": "add"}},
    "version": {"version_column": "ver"},
}


@pytest.mark.parametrize("rule", list(RULES))
def test_puts_and_deletes_leave_what_applying_them_one_by_one_leaves(
    dsn: str, db: psycopg.Connection[Any], table_name: str, rule: str
) -> None:
    """One batch, a batch per write, queue-wide coalescing: the same table as the writes
    applied in put order. A put after a delete of its key is never merged into the deleted
    row, nor ignored because of it."""
    create(db, table_name, "k int PRIMARY KEY, n int NOT NULL, ver int NOT NULL")
    ops = _ops(seed=len(rule), versioned=rule == "version")
    expected = _expected(ops, rule)
    for batch_size, coalesce in ((1, False), (1000, False), (1000, True)):
        db.execute(named("TRUNCATE {}", table_name))
        failures: list[Failure] = []
        sink = PostgresUpsert(dsn, table_name, "k", **RULES[rule])
        options = {"batch_size": batch_size, "coalesce": coalesce, "flush_interval": 60}
        with queue(sink, on_failure=lambda r, e, f=failures: f.append((r, e)), **options) as wb:
            for kind, row in ops:
                if kind == "put":
                    wb.put(row)
                else:
                    wb.delete(row)
            assert wb.flush(timeout=30)
            m = wb.metrics()
        assert select(db, table_name) == expected, (batch_size, coalesce)
        assert failures == []
        assert m.total_enqueued == len(ops) == m.total_persisted
        assert m.total_deleted == sum(kind == "delete" for kind, _ in ops)  # each delete()


def test_a_delete_takes_a_scalar_a_tuple_a_mapping_and_counts_as_written(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "a int, b text, v text, PRIMARY KEY (a, b)")
    registry = CollectorRegistry()
    with queue(PostgresUpsert(dsn, table_name, ["a", "b"]), registry=registry) as wb:
        wb.put_many([{"a": i, "b": "x", "v": "kept"} for i in range(6)])
        assert wb.flush(timeout=30)
        wb.delete((0, "x"))
        wb.delete({"a": 1, "b": "x"})
        wb.delete_many([(2, "x"), {"a": 3, "b": "x"}, (99, "absent")])
        wb.delete_nowait((4, "x"))
        assert wb.flush(timeout=30)
        m = wb.metrics()
    assert select(db, table_name) == [(5, "x", "kept")]
    assert (m.total_enqueued, m.total_persisted, m.total_deleted) == (12, 12, 6)
    assert m.current_queue_depth == 0
    deleted = registry.get_sample_value("writebehind_rows_deleted_total", {"queue": table_name})
    assert deleted == 6


def test_a_scalar_key_deletes_from_a_one_column_key(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "k text PRIMARY KEY, v int")
    with queue(PostgresUpsert(dsn, table_name, "k")) as wb:
        wb.put_many([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
        assert wb.flush(timeout=30)
        wb.delete("a")
    assert select(db, table_name) == [("b", 2)]


def test_a_versioned_delete_applies_only_to_an_older_row(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "k int PRIMARY KEY, v text, ver int")
    with queue(PostgresUpsert(dsn, table_name, "k", version_column="ver")) as wb:
        wb.put_many([{"k": k, "v": "x", "ver": 5} for k in (1, 2, 3)])
        assert wb.flush(timeout=30)
        wb.delete({"k": 1, "ver": 4})  # older than the row: nothing
        wb.delete({"k": 2, "ver": 5})  # the same version: nothing
        wb.delete({"k": 3, "ver": 6})  # newer: deleted
        assert wb.flush(timeout=30)
        with pytest.raises(ValueError, match="'ver'"):
            wb.delete(1)  # a versioned sink's delete says its version
    assert select(db, table_name) == [(1, "x", 5), (2, "x", 5)]


def test_a_delete_of_the_wrong_shape_fails_its_call_and_nothing_is_accepted(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "a int, b int, PRIMARY KEY (a, b)")
    with queue(PostgresUpsert(dsn, table_name, ["a", "b"])) as wb:
        wb.start()
        with pytest.raises(ValueError, match="2 columns"):
            wb.delete(1)
        with pytest.raises(ValueError, match="missing column"):
            wb.delete({"a": 1})
        with pytest.raises(ValueError, match="None"):
            wb.delete((1, None))
        with pytest.raises(ValueError, match="^key 1: "):
            wb.delete_many([(1, 1), (1, 2, 3)])
        assert wb.metrics().total_enqueued == 0


def test_an_append_only_sink_cannot_delete(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "v text")
    with queue(PostgresUpsert(dsn, table_name, key=None)) as wb:
        with pytest.raises(TypeError, match="append-only"):
            wb.delete(1)
        with pytest.raises(TypeError, match="append-only"):
            wb.delete_many([1])


def test_a_delete_the_database_refuses_reaches_on_failure_as_its_key_alone(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    """A row still referenced (ON DELETE RESTRICT) stays; its delete is handed over with its
    own error, and the other writes of its batch are written."""
    create(db, table_name, "k int PRIMARY KEY, v text")
    child = f"{table_name}_child"
    db.execute(named("CREATE TABLE {} (k int REFERENCES {} ON DELETE RESTRICT)", child, table_name))
    try:
        failures: list[Failure] = []
        with queue(
            PostgresUpsert(dsn, table_name, "k"), on_failure=lambda r, e: failures.append((r, e))
        ) as wb:
            wb.put_many([{"k": k, "v": "x"} for k in (1, 2, 3)])
            assert wb.flush(timeout=30)
            db.execute(named("INSERT INTO {} VALUES (2)", child))
            wb.delete_many([1, 2, 3])
            wb.put({"k": 4, "v": "new"})
            assert wb.flush(timeout=30)
            m = wb.metrics()
        assert select(db, table_name) == [(2, "x"), (4, "new")]
        assert [rows for rows, _ in failures] == [[{"k": 2}]]
        assert isinstance(failures[0][1], psycopg.errors.ForeignKeyViolation)
        assert (m.total_deleted, m.total_failed, m.total_persisted) == (2, 1, 6)
    finally:
        db.execute(named("DROP TABLE {}", child))


def test_deletes_accepted_before_the_catalog_is_read_are_checked_in_put_order(
    private_server: PrivateServer,
) -> None:
    with psycopg.connect(private_server.dsn, autocommit=True) as db:
        create(db, "items", "k int PRIMARY KEY, v text")
        db.execute("INSERT INTO items VALUES (1, 'old'), (2, 'old'), (3, 'old')")
    private_server.stop()
    failures: list[Failure] = []
    wb = queue(
        PostgresUpsert(private_server.dsn, "items", "k", connect_timeout=2),
        on_failure=lambda rows, error: failures.append((rows, error)),
    )
    with wb:
        wb.delete(1)
        wb.put({"k": 2, "v": "new"})
        wb.delete(2)
        wb.put({"k": 2, "v": "newest"})
        wb.delete({"k": 3, "nope": 1})  # accepted: the key is checked once it is known
        assert wb.metrics().total_persisted == 0
        private_server.start()
        assert wb.flush(timeout=60)
        m = wb.metrics()
    with psycopg.connect(private_server.dsn) as db:
        assert db.execute("SELECT * FROM items ORDER BY k").fetchall() == [
            (2, "newest"),
            (3, "old"),
        ]
    assert [rows for rows, _ in failures] == [[{"k": 3, "nope": 1}]]
    assert "'nope'" in str(failures[0][1])
    assert (m.total_persisted, m.total_deleted, m.total_failed) == (4, 2, 1)


def test_a_key_given_as_text_is_the_key_of_its_number(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    """A view gets its key from the URL, as text: the writes of "2" and 2 are the writes of
    one key, in put order."""
    create(db, table_name, "k int PRIMARY KEY, v int")
    db.execute(named("INSERT INTO {} VALUES (1, 0), (2, 0)", table_name))
    with queue(PostgresUpsert(dsn, table_name, "k"), batch_size=100) as wb:
        wb.put({"k": 1, "v": 5})
        wb.delete("1")
        wb.delete(" 2")
        wb.put({"k": 2, "v": 7})
        wb.put({"k": "3", "v": 9})
        wb.put({"k": 3, "v": 10})
    assert select(db, table_name) == [(2, 7), (3, 10)]


def test_with_coalesce_a_delete_of_a_waiting_key_takes_no_room(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    """As a put of a waiting key: it is combined into the waiting row. A put after that
    delete is a row of its own, and needs room."""
    create(db, table_name, "k int PRIMARY KEY, v int")
    options = {"maxsize": 2, "batch_size": 1, "coalesce": True, "flush_interval": 60}
    with (
        queue(PostgresUpsert(dsn, table_name, "k"), **options) as wb,
        psycopg.connect(dsn) as locker,
    ):
        wb.start()
        locker.execute(named("LOCK TABLE {}", table_name))  # the first write waits behind it
        wb.put({"k": 0, "v": 0})
        assert wait_until(lambda: waiting_on_a_lock(db))  # k0 taken: its write waits
        wb.put_many([{"k": 1, "v": 1}, {"k": 2, "v": 2}])  # waiting: the queue is full
        wb.put_nowait({"k": 1, "v": 2})  # combined
        wb.delete_nowait(1)  # combined too
        wb.delete_many([1])
        with pytest.raises(QueueFull):
            wb.put_many([{"k": 1, "v": 3}], block=False)  # after a delete: a row of its own
        assert wb.metrics().total_enqueued == 6
        locker.rollback()  # the lock goes
        assert wb.flush(timeout=30)
        assert wb.metrics().total_persisted == 6
    assert select(db, table_name) == [(0, 0), (2, 2)]


def test_a_number_deletes_the_row_of_its_text(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "k text PRIMARY KEY, v int")
    with queue(PostgresUpsert(dsn, table_name, "k"), batch_size=100) as wb:
        wb.put_many([{"k": "7", "v": 1}, {"k": "8", "v": 1}])
        assert wb.flush(timeout=30)
        wb.put({"k": 7, "v": 2})
        wb.delete(7)
        wb.delete(8)
        wb.put({"k": 9, "v": 3})
        assert wb.flush(timeout=30)
        assert wb.metrics().total_failed == 0
    assert select(db, table_name) == [("9", 3)]
