"""The write methods (unnest, copy, executemany, auto) on PostgreSQL: the same rows in the
table whichever writes them, no state left on the server connection, few round trips."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors as pe
import pytest
from psycopg.types.json import Json, Jsonb
from psycopg_pool import ConnectionPool

from tests.conftest import WRITE_METHODS, create, named, select
from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.postgres.methods import COPY_FROM_ROWS

Failure = tuple[list[Mapping[str, Any]], BaseException]

COMMON_TYPES = """k int PRIMARY KEY, u uuid, n numeric, b bytea, tags text[], i4 int4, i8 int8,
    f float8, flag bool, d date, ts timestamptz, j json, jb jsonb"""

UTC = timezone.utc


def common_rows() -> list[dict[str, Any]]:
    """Values of the common column types, NULLs among them, and json of every shape."""
    when = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=5)))
    rows: list[dict[str, Any]] = [
        {
            "k": 1,
            "u": uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            "n": Decimal("12345678901234567890.000000001"),
            "b": b"\x00\xff\x01 binary",
            "tags": ["a", "b c", "", 'quote"d', "NULL", None],
            "i4": -(2**31),
            "i8": 2**63 - 1,
            "f": 0.1,
            "flag": True,
            "d": date(1999, 12, 31),
            "ts": when,
            "j": {"nested": [1, 2.5, None, "x"]},
            "jb": [1, {"a": None}],
        },
        {
            "k": 2,
            "u": "6BA7B811-9DAD-11D1-80B4-00C04FD430C8",  # a str in either case
            "n": Decimal("-0.5"),
            "b": b"",
            "tags": [],
            "i4": 2**31 - 1,
            "i8": -(2**63),
            "f": -1e308,
            "flag": False,
            "d": date(2000, 1, 1),
            "ts": datetime(1970, 1, 1, tzinfo=UTC),
            "j": None,  # SQL NULL
            "jb": Jsonb(None),  # JSON null
        },
        {"k": 3, **dict.fromkeys(["u", "n", "b", "tags", "i4", "i8", "f", "flag", "d", "ts"])}
        | {"j": "[]", "jb": '"text"'},  # JSON text as str
        {
            "k": 4,
            "u": None,
            "n": 7,  # an int for numeric
            "b": None,
            "tags": ["only"],
            "i4": 0,
            "i8": 5,
            "f": 3,  # an int for float8
            "flag": None,
            "d": None,
            "ts": None,
            "j": Json({"w": 1}),
            "jb": Jsonb({"k": [True, False]}),
        },
    ]
    return rows


def write_all(
    dsn: str, table: str, rows: Sequence[Mapping[str, Any]], method: str, **options: Any
) -> list[Failure]:
    failures: list[Failure] = []
    sink = PostgresUpsert(dsn, table, "k", method=method, **options)
    with WriteBehindQueue(
        sink,
        registry=None,
        retry_backoff=0.01,
        on_failure=lambda rows, error: failures.append((rows, error)),
    ) as wb:
        wb.put_many(rows)
    return failures


def table_text(db: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """Every row as the server prints it: equal texts are equal values, of the same type."""
    return db.execute(named("SELECT t::text FROM {} AS t ORDER BY 1", table)).fetchall()


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_common_types_round_trip_identically_through_every_method(
    dsn: str, db: psycopg.Connection[Any], table_name: str, method: str
) -> None:
    create(db, table_name, COMMON_TYPES)
    reference = f"{table_name}_ref"
    create(db, reference, COMMON_TYPES)
    try:
        assert write_all(dsn, reference, common_rows(), "executemany") == []
        assert write_all(dsn, table_name, common_rows(), method) == []
        assert table_text(db, table_name) == table_text(db, reference)
        got = {row[0]: row for row in select(db, table_name)}
        assert got[1][1:4] == (
            uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            Decimal("12345678901234567890.000000001"),
            b"\x00\xff\x01 binary",
        )
        assert got[1][4] == ["a", "b c", "", 'quote"d', "NULL", None]
        assert got[1][10] == datetime(2024, 2, 29, 18, 59, 58, 123456, tzinfo=UTC)
        assert (got[2][11], got[2][12]) == (None, None)  # SQL NULL, and JSON null read back
        assert db.execute(named("SELECT jb IS NULL FROM {} WHERE k = 2", table_name)).fetchone()
        assert got[3][1:11] == (None,) * 10 and (got[3][11], got[3][12]) == ([], "text")
        assert (got[4][2], got[4][7]) == (Decimal(7), 3.0)
    finally:
        db.execute(named("DROP TABLE {}", reference))


UNUSUAL_TYPES = """k int PRIMARY KEY,
    pos positive_int,
    word short_text,
    mood mood,
    pair pair,
    grid int[],
    tags tag_list,
    span int4range,
    addr inet,
    at time,
    took interval,
    code varchar(3)"""


@pytest.fixture
def unusual_types(db: psycopg.Connection[Any]) -> Iterator[None]:
    db.execute("DROP DOMAIN IF EXISTS positive_int, short_text, tag_list CASCADE")
    db.execute("DROP TYPE IF EXISTS mood, pair CASCADE")
    db.execute("CREATE DOMAIN positive_int AS int CHECK (VALUE > 0)")
    db.execute("CREATE DOMAIN short_text AS varchar(5)")
    db.execute("CREATE DOMAIN tag_list AS text[] CHECK (cardinality(VALUE) < 4)")
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    db.execute("CREATE TYPE pair AS (a int, b text)")
    yield
    db.execute("DROP DOMAIN IF EXISTS positive_int, short_text, tag_list CASCADE")
    db.execute("DROP TYPE IF EXISTS mood, pair CASCADE")


@pytest.mark.usefixtures("unusual_types")
@pytest.mark.parametrize("method", WRITE_METHODS)
def test_domains_enums_composites_arrays_and_ranges_work_and_bad_values_are_isolated(
    dsn: str, db: psycopg.Connection[Any], table_name: str, method: str
) -> None:
    from psycopg.types.range import Range

    create(db, table_name, UNUSUAL_TYPES)
    good: list[dict[str, Any]] = [
        {
            "k": k,
            "pos": k,
            "word": f"w{k}",
            "mood": "happy",
            "pair": (k, f"b{k}"),
            "grid": [[1, 2], [3, k]],
            "tags": ["x"] * (k % 3),
            "span": Range(k, k + 10),
            "addr": "10.0.0.1",
            "at": time(12, k % 60),
            "took": timedelta(days=1, seconds=k),
            "code": "abc",
        }
        for k in range(1, 41)
    ]
    bad: dict[int, dict[str, Any]] = {
        41: {"pos": 0},  # the domain's check
        42: {"word": "toolong"},  # the domain's typmod: refused, not cut
        43: {"mood": "angry"},  # not a label of the enum
        44: {"tags": ["a", "b", "c", "d"]},  # a domain over an array, its check
        45: {"code": "abcd"},  # varchar(3): refused, not cut
        46: {"pos": True},  # a bool for an int: refused, as a parameter would be
    }
    rows = good + [{**good[0], "k": k, **change} for k, change in bad.items()]
    failures = write_all(dsn, table_name, rows, method)
    refused = {rows[0]["k"]: error for rows, error in failures}
    assert set(refused) == set(bad)
    assert isinstance(refused[41], pe.CheckViolation)
    assert isinstance(refused[42], pe.StringDataRightTruncation)
    assert isinstance(refused[44], pe.CheckViolation)
    assert isinstance(refused[45], pe.StringDataRightTruncation)
    assert isinstance(refused[46], pe.DatatypeMismatch)
    reference = f"{table_name}_ref"
    create(db, reference, UNUSUAL_TYPES)
    try:
        assert write_all(dsn, reference, good, "executemany") == []
        assert table_text(db, table_name) == table_text(db, reference)
    finally:
        db.execute(named("DROP TABLE {}", reference))
    assert db.execute(
        named("SELECT grid, pair::text FROM {} WHERE k = 3", table_name)
    ).fetchone() == (
        [[1, 2], [3, 3]],
        "(3,b3)",
    )


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_mixed_python_types_in_a_column_and_columns_of_nulls(
    dsn: str, db: psycopg.Connection[Any], table_name: str, method: str
) -> None:
    create(db, table_name, "k int PRIMARY KEY, f float8, u uuid, n numeric, s text, t timestamp")
    u = uuid.uuid4()
    aware = datetime(2024, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"k": 1, "f": 1, "u": u, "n": 1, "s": None, "t": datetime(2024, 1, 1, 12)},
        {"k": 2, "f": 2.5, "u": str(uuid.UUID(int=2)), "n": Decimal("2.5"), "s": None, "t": None},
        {
            "k": 3,
            "f": None,
            "u": None,
            "n": 2**70,
            "s": None,
            "t": aware,
        },
    ]
    assert write_all(dsn, table_name, rows, method, naive_timezone="UTC") == []
    assert select(db, table_name, "k, f, u, n, s") == [
        (1, 1.0, u, Decimal(1), None),
        (2, 2.5, uuid.UUID(int=2), Decimal("2.5"), None),
        (3, None, None, Decimal(2**70), None),
    ]


def test_values_of_mixed_types_in_a_string_column_are_stored_as_the_same_text_by_every_method(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    # Into a string column the server stores a value's own text (a uuid with dashes, a bool
    # as "true"); psycopg's text for some values differs, and a column of several types in one
    # batch was sent as psycopg's text by unnest and copy.
    values: list[Any] = [
        uuid.UUID(int=7),
        "plain",
        True,
        5,
        2**70,
        Decimal("1E+2"),
        0.1,
        float("inf"),
        date(2024, 1, 2),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 1, 2, 3, 4, 5),
        timedelta(days=1, seconds=3),
        time(1, 2, 3),
        b"\x01\xff",
        Jsonb({"a": 1}),
        [1, 2],
        None,
    ]
    texts = {}
    for method in WRITE_METHODS:
        table = f"{table_name}_{method}"
        create(db, table, "k int PRIMARY KEY, s text, v varchar(60)")
        try:
            rows = [{"k": i, "s": value, "v": value} for i, value in enumerate(values)]
            assert write_all(dsn, table, rows, method) == []
            texts[method] = select(db, table)
        finally:
            db.execute(named("DROP TABLE {}", table))
    assert texts["unnest"] == texts["executemany"]
    assert texts["copy"] == texts["executemany"]
    by_key = {k: s for k, s, _ in texts["executemany"]}
    assert (by_key[0], by_key[2]) == ("00000000-0000-0000-0000-000000000007", "true")
    assert all(s == v for _, s, v in texts["unnest"])


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_append_only_rows_of_nulls(
    dsn: str, db: psycopg.Connection[Any], table_name: str, method: str
) -> None:
    create(db, table_name, "id bigint GENERATED ALWAYS AS IDENTITY, a int, b text")
    with WriteBehindQueue(
        PostgresUpsert(dsn, table_name, None, method=method), registry=None
    ) as wb:
        wb.put_many([{"a": None, "b": None}] * 2)  # a batch with no value at all
        assert wb.flush(timeout=30)
        wb.put_many([{"a": None, "b": None}] + [{"a": 1, "b": None}])
    assert select(db, table_name, "a, b") == [(1, None), (None, None), (None, None), (None, None)]


class CountingConnection(psycopg.Connection[Any]):
    """Counts the times a query waits on the socket: each is a poll with the GIL let go."""

    waits = 0

    def wait(self, gen: Generator[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
        return super().wait(self._counted(gen), *args, **kwargs)

    def _counted(self, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        try:
            waiting = next(gen)
            while True:
                CountingConnection.waits += 1
                waiting = gen.send((yield waiting))
        except StopIteration as stop:
            return stop.value


@pytest.fixture
def one_connection(dsn: str) -> Iterator[ConnectionPool[Any]]:
    """A pool of one connection, lent to the sink, so that the test sees what it leaves."""
    with ConnectionPool(
        dsn, connection_class=CountingConnection, min_size=1, max_size=1, open=True
    ) as pool:
        yield pool


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_no_prepared_statement_or_table_is_left_on_the_connection_but_by_executemany(
    db: psycopg.Connection[Any], table_name: str, one_connection: ConnectionPool[Any], method: str
) -> None:
    create(db, table_name, "k int PRIMARY KEY, v text")
    sink = PostgresUpsert(one_connection, table_name, "k", method=method)
    sink.open()
    try:
        for batch in range(8):  # psycopg prepares a statement run 5 times
            sink.write([sink.prepare({"k": k, "v": f"{batch}"})[1] for k in range(50)])
    finally:
        sink.close()
    with one_connection.connection() as conn:
        assert not conn.autocommit  # the borrowed connection is given back as it came
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        temporary = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()"
        ).fetchone()
    assert select(db, table_name)[-1] == (49, "7")
    assert prepared is not None and temporary == (0,)
    assert (prepared[0] > 0) == (method == "executemany")


@pytest.mark.parametrize(
    ("method", "fewest", "most"), [("unnest", 1, 1), ("copy", 3, 5), ("executemany", 100, 1000)]
)
def test_socket_waits_per_batch(
    db: psycopg.Connection[Any],
    table_name: str,
    one_connection: ConnectionPool[Any],
    method: str,
    fewest: int,
    most: int,
) -> None:
    """A batch of 100 rows: unnest waits once, copy a few times, executemany about twice a
    row (its pipeline polls the socket for each statement)."""
    create(db, table_name, "k int PRIMARY KEY, v text")
    sink = PostgresUpsert(one_connection, table_name, "k", method=method)
    sink.open()
    try:
        rows = [sink.prepare({"k": k, "v": "x" * 20})[1] for k in range(100)]
        sink.write(rows)  # a first write may check the connection
        CountingConnection.waits = 0
        sink.write(rows)
        waits = CountingConnection.waits
    finally:
        sink.close()
    assert fewest <= waits <= most


def test_auto_writes_small_batches_by_unnest_and_large_ones_by_copy(
    db: psycopg.Connection[Any],
    table_name: str,
    one_connection: ConnectionPool[Any],
    tmp_path: Path,
) -> None:
    create(db, table_name, "k int PRIMARY KEY, v text")
    sink = PostgresUpsert(one_connection, table_name, "k")
    assert sink.method == "auto"
    sink.open()
    sent: dict[int, str] = {}
    try:
        for size in (COPY_FROM_ROWS - 1, COPY_FROM_ROWS):
            rows = [sink.prepare({"k": k, "v": f"{size}"})[1] for k in range(size)]
            trace = tmp_path / f"{size}.trace"
            with trace.open("w") as out:
                with one_connection.connection() as conn:  # the sink's one connection
                    conn.pgconn.trace(out.fileno())  # libpq's record of the protocol messages
                try:
                    sink.write(rows)
                finally:
                    with one_connection.connection() as conn:
                        conn.pgconn.untrace()
            sent[size] = trace.read_text()
    finally:
        sink.close()
    assert "unnest" in sent[COPY_FROM_ROWS - 1] and "COPY" not in sent[COPY_FROM_ROWS - 1]
    assert "COPY" in sent[COPY_FROM_ROWS] and "unnest" not in sent[COPY_FROM_ROWS]
    assert select(db, table_name, "count(*), min(v)") == [(COPY_FROM_ROWS, str(COPY_FROM_ROWS))]


def test_a_method_is_checked_when_the_sink_is_built(dsn: str) -> None:
    with pytest.raises(ValueError, match="method must be one of 'auto', 'unnest'"):
        PostgresUpsert(dsn, "t", "k", method="COPY")
    with pytest.raises(TypeError, match="method must be a str, got int 1"):
        PostgresUpsert(dsn, "t", "k", method=1)  # type: ignore[arg-type]
