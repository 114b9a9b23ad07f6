"""PostgresUpsert on a real PostgreSQL: statements, introspection, row checks, pools."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import create, named, select
from writebehind import EagerQueue, PostgresUpsert, QueueClosed, SchemaError, WriteBehindQueue
from writebehind.queue.eager import OwnConnection


def queue(dsn: str, table: str, key: Any = "verikey", **options: Any) -> WriteBehindQueue:
    sink_options = {k: options.pop(k) for k in ("columns", "schema") if k in options}
    options.setdefault("registry", None)
    return WriteBehindQueue(PostgresUpsert(dsn, table=table, key=key, **sink_options), **options)


def test_inserts_then_updates_with_the_last_value(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    with queue(dsn, entries, batch_size=7) as wb:
        for i in range(100):
            wb.put({"verikey": f"k{i % 10}", "n": i, "doc": {"i": i, "tags": ["a", i]}})
        assert wb.flush(timeout=30)
        assert wb.metrics().total_persisted == 100
    rows = select(db, entries, "verikey, n, doc")
    assert rows == [(f"k{k}", 90 + k, {"i": 90 + k, "tags": ["a", 90 + k]}) for k in range(10)]


def test_each_batch_is_one_transaction(dsn: str, db: psycopg.Connection[Any], entries: str) -> None:
    with queue(dsn, entries, batch_size=50) as wb:
        for i in range(200):
            wb.put({"verikey": f"k{i}", "n": i, "doc": None})
        assert wb.flush(timeout=30)
        assert wb.metrics().total_batches == 4
    # Rows written by one transaction share its id, xmin.
    assert select(db, entries, "count(*), count(DISTINCT xmin::text)")[0] == (200, 4)


def test_json_values_may_be_plain_python_and_bad_ones_fail_at_put(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    with queue(dsn, entries) as wb:
        wb.put({"verikey": "dict", "n": 1, "doc": {"nested": {"x": [1, 2.5, None, True]}}})
        wb.put({"verikey": "list", "n": 1, "doc": [1, "two"]})
        wb.put({"verikey": "text", "n": 1, "doc": '{"a": 1}'})  # a str is JSON text
        wb.put({"verikey": "null", "n": 1, "doc": None})
        with pytest.raises(TypeError, match="'doc'"):
            wb.put({"verikey": "bad", "n": 1, "doc": {"s": {1, 2}}})
        assert wb.flush(timeout=30)
        assert wb.metrics().total_enqueued == 4
    assert dict(select(db, entries, "verikey, doc")) == {
        "dict": {"nested": {"x": [1, 2.5, None, True]}},
        "list": [1, "two"],
        "text": {"a": 1},
        "null": None,
    }


def test_naive_datetimes_are_refused_for_timestamptz(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY, at timestamptz")
    with queue(dsn, table_name, key="id") as wb:
        with pytest.raises(ValueError, match="'at'.*naive"):
            wb.put({"id": 1, "at": datetime(2026, 1, 1, 12, 0)})
        aware = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=5)))
        wb.put({"id": 2, "at": aware})
    assert select(db, table_name) == [(2, aware)]


def test_rows_must_match_the_written_columns(dsn: str, entries: str) -> None:
    with queue(dsn, entries) as wb:
        with pytest.raises(TypeError, match="Mapping"):
            wb.put(["verikey", "n"])
        with pytest.raises(ValueError, match="missing column.*'doc'"):
            wb.put({"verikey": "a", "n": 1})
        with pytest.raises(ValueError, match="unknown column.*'colour'"):
            wb.put({"verikey": "a", "n": 1, "doc": None, "colour": "red"})
        with pytest.raises(ValueError, match="'updated_at' has a default"):
            wb.put({"verikey": "a", "n": 1, "doc": None, "updated_at": None})
        assert wb.metrics().total_enqueued == 0


def test_written_columns_default_to_those_without_a_default(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(
        db,
        table_name,
        """id bigint GENERATED ALWAYS AS IDENTITY, code text UNIQUE, qty int,
           created timestamptz DEFAULT now(), twice int GENERATED ALWAYS AS (qty * 2) STORED""",
    )
    sink = PostgresUpsert(dsn, table=table_name, key="code")
    with WriteBehindQueue(sink, registry=None) as wb:
        wb.put({"code": "a", "qty": 2})
        assert sink.written_columns == ("code", "qty")
    assert select(db, table_name, "code, qty, twice, created IS NOT NULL") == [("a", 2, 4, True)]


def test_columns_pick_a_subset_and_the_key_is_always_written(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    db.execute(
        named("INSERT INTO {} (verikey, n, doc) VALUES ('a', 1, '{{\"keep\": true}}')", entries)
    )
    with queue(dsn, entries, columns=["n"]) as wb:
        wb.put({"verikey": "a", "n": 5})
    assert select(db, entries, "verikey, n, doc") == [("a", 5, {"keep": True})]


def test_composite_keys(dsn: str, db: psycopg.Connection[Any], table_name: str) -> None:
    create(db, table_name, "tenant int, name text, score int, PRIMARY KEY (tenant, name)")
    with queue(dsn, table_name, key=("tenant", "name"), batch_size=4) as wb:
        for i in range(40):
            wb.put({"tenant": i % 2, "name": f"n{i % 3}", "score": i})
    assert select(db, table_name, "tenant, name, score") == [
        (0, "n0", 36), (0, "n1", 34), (0, "n2", 38), (1, "n0", 39), (1, "n1", 37), (1, "n2", 35),
    ]  # fmt: skip


def test_names_needing_quotes_and_a_key_only_table(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    weird = f"{table_name} Weird"
    try:
        create(db, weird, '"Select" text PRIMARY KEY, "from" int, "two words" text')
        with queue(dsn, weird, key="Select") as wb:
            wb.put({"Select": "x", "from": 1, "two words": "a b"})
            wb.put({"Select": "x", "from": 2, "two words": "c d"})
        assert select(db, weird) == [("x", 2, "c d")]
        create(db, table_name, "only_key int PRIMARY KEY")
        with queue(dsn, table_name, key="only_key") as wb:
            for _ in range(2):
                wb.put({"only_key": 1})
        assert select(db, table_name) == [(1,)]
    finally:
        db.execute(named("DROP TABLE IF EXISTS {}", weird))


def test_schema_argument_and_search_path(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    schema = f"{table_name}_s"
    db.execute(named("CREATE SCHEMA {}", schema))
    try:
        db.execute(named("CREATE TABLE {} (id int PRIMARY KEY, v text)", (schema, "t")))
        with queue(dsn, "t", key="id", schema=schema) as wb:
            wb.put({"id": 1, "v": "in schema"})
        assert db.execute(named("SELECT v FROM {}", (schema, "t"))).fetchall() == [("in schema",)]
        with pytest.raises(SchemaError, match="'t' does not exist"):
            queue(dsn, "t", key="id").put({"id": 1, "v": "x"})
    finally:
        db.execute(named("DROP SCHEMA {} CASCADE", schema))


@pytest.mark.parametrize(
    ("key", "options", "message"),
    [
        ("verikey", {"table": "no_such_table"}, "'no_such_table' does not exist"),
        ("nope", {}, "key column 'nope' is not a column"),
        ("n", {}, r"key \('n',\) .* no primary key or unique index"),
        ("verikey", {"columns": ["n", "colour"]}, "column 'colour' is not a column"),
    ],
)
def test_unusable_table_key_or_column_fail_the_first_put(
    dsn: str, entries: str, key: str, options: dict[str, Any], message: str
) -> None:
    table = options.pop("table", entries)
    wb = queue(dsn, table, key=key, **options)
    with pytest.raises(SchemaError, match=message):
        wb.put({"verikey": "a", "n": 1, "doc": None})
    assert wb.metrics().total_enqueued == 0
    wb.close()
    with pytest.raises(QueueClosed):
        wb.put({"verikey": "a", "n": 1, "doc": None})


def test_a_partial_unique_index_is_no_conflict_target(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int, v text")
    db.execute(named("CREATE UNIQUE INDEX ON {} (id) WHERE v IS NOT NULL", table_name))
    with pytest.raises(SchemaError, match="no primary key or unique index"):
        WriteBehindQueue(PostgresUpsert(dsn, table_name, "id"), registry=None).start()
    db.execute(named("CREATE UNIQUE INDEX ON {} (id)", table_name))
    with WriteBehindQueue(PostgresUpsert(dsn, table_name, "id"), registry=None) as wb:
        wb.start()


def test_sink_arguments_are_checked_without_connecting() -> None:
    with pytest.raises(ValueError, match="table"):
        PostgresUpsert("host=/nonexistent", table="", key="id")
    with pytest.raises(ValueError, match="key"):
        PostgresUpsert("host=/nonexistent", table="t", key=[])
    with pytest.raises(ValueError, match="twice"):
        PostgresUpsert("host=/nonexistent", table="t", key="id", columns=["a", "a"])
    with pytest.raises(TypeError, match="conninfo"):
        PostgresUpsert(42, table="t", key="id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a sequence"):
        PostgresUpsert("host=/nonexistent", table="t", key=5)  # type: ignore[arg-type]
    bad: tuple[tuple[str, Any, type[Exception]], ...] = (
        ("write_timeout", 0, ValueError),
        ("write_timeout", "30", TypeError),
        ("pool_size", 0, ValueError),
        ("pool_size", 2.0, TypeError),
        ("naive_timezone", "Mars/Olympus", ValueError),
    )
    for option, value, error in bad:
        options: dict[str, Any] = {option: value}
        with pytest.raises(error, match=option):
            PostgresUpsert("host=/nonexistent", table="t", key="id", **options)


def test_a_shared_pool_closes_with_its_last_sink_a_borrowed_one_never(
    dsn: str, entries: str
) -> None:
    first, second = (PostgresUpsert(dsn, table=entries, key="verikey") for _ in range(2))
    with WriteBehindQueue(first, registry=None, name="first") as wb:
        wb.put({"verikey": "a", "n": 1, "doc": None})
        with WriteBehindQueue(second, registry=None, name="second") as wb2:
            wb2.put({"verikey": "c", "n": 1, "doc": None})
            assert first._shared is not None and first._shared is second._shared
            pool = first._shared.pool
        assert not pool.closed  # the first queue still uses it
    assert pool.closed

    with ConnectionPool(dsn, min_size=1, open=True) as borrowed:
        with WriteBehindQueue(PostgresUpsert(borrowed, entries, "verikey"), registry=None) as wb:
            wb.put({"verikey": "b", "n": 1, "doc": None})
        assert not borrowed.closed
        with borrowed.connection() as conn:
            assert conn.execute(named("SELECT count(*) FROM {}", entries)).fetchone() == (3,)


def test_on_failure_receives_rows_as_they_were_put(dsn: str, entries: str) -> None:
    seen: list[tuple[list[Mapping[str, Any]], BaseException]] = []
    bad = {"verikey": "neg", "n": -5, "doc": {"why": "check"}}
    with queue(dsn, entries, on_failure=lambda rows, e: seen.append((rows, e))) as wb:
        wb.put(bad)
    assert seen[0][0] == [bad]
    assert isinstance(seen[0][1], psycopg.errors.CheckViolation)


def test_put_many_checks_every_row_first_and_writes_them_all(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    good = [{"verikey": f"k{i}", "n": i, "doc": {"i": i}} for i in range(3)]
    with queue(dsn, entries) as wb:
        with pytest.raises(ValueError, match=r"row 2: .*missing column\(s\) 'doc'"):
            wb.put_many([*good[:2], {"verikey": "bad", "n": 1}])
        assert wb.metrics().total_enqueued == 0
        wb.put_many(good)
    assert select(db, entries, "verikey, n") == [("k0", 0), ("k1", 1), ("k2", 2)]

    eager = EagerQueue(PostgresUpsert(dsn, entries, "verikey"), OwnConnection(dsn), registry=None)
    with eager:
        with pytest.raises(TypeError, match="row 1"):
            eager.put_many([good[0], "nope"])
        eager.put_many([{"verikey": "k9", "n": 9, "doc": None}])
    assert select(db, entries, "verikey, n")[-1] == ("k9", 9)
