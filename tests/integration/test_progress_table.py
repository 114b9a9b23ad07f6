"""The progress table of the durable journal, on PostgreSQL: created by open() when a sink
records progress, written in the transaction of each batch by every method, read and forgotten
by prefix, refused with a SchemaError that says what to run."""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors as pe
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from tests.conftest import WRITE_METHODS, PrivateServer, named, wait_until, waiting_on_a_lock
from tests.integration.test_methods import CountingConnection
from writebehind import PostgresUpsert
from writebehind._sink import ProgressMark
from writebehind.errors import ProgressConflict, SchemaError
from writebehind.postgres.progress import ProgressTable

PROGRESS = "writebehind_progress"
_schema_numbers = itertools.count()


@pytest.fixture
def schema(db: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh schema of the test's own (no progress table in it yet), dropped afterwards."""
    name = f"wb_progress_{os.getpid()}_{next(_schema_numbers)}"
    db.execute(named("CREATE SCHEMA {}", name))
    yield name
    db.execute(named("DROP SCHEMA {} CASCADE", name))


def make_items(db: psycopg.Connection[Any], schema: str) -> None:
    db.execute(
        named(
            "CREATE TABLE {} (k int PRIMARY KEY, n int NOT NULL CHECK (n >= 0))",
            (schema, "items"),
        )
    )


def sink_on(conninfo: str | ConnectionPool[Any], schema: str, **options: Any) -> PostgresUpsert:
    """An open sink on ``schema``.items that records progress."""
    sink = PostgresUpsert(conninfo, "items", "k", schema=schema, **options)
    sink.track_progress()
    sink.open()
    return sink


def mark(
    source: str,
    seq: int,
    extra: tuple[int, ...] = (),
    after: tuple[int, tuple[int, ...]] | None = None,
    owner: str = "test",
) -> ProgressMark:
    """A mark as a queue makes it: ``after`` is what the last committed write of ``source``
    left (None: no row yet)."""
    return ProgressMark(source, seq, extra, after, owner)


def rows_of(sink: PostgresUpsert, *pairs: tuple[int, int]) -> list[tuple[Any, ...]]:
    return [sink.prepare({"k": k, "n": n})[1] for k, n in pairs]


def items(db: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return db.execute(named("SELECT k, n FROM {} ORDER BY k", (schema, "items"))).fetchall()


def progress(db: psycopg.Connection[Any], schema: str) -> dict[str, tuple[int, list[int]]]:
    found = db.execute(
        named("SELECT journal, applied_seq, applied_extra FROM {}", (schema, PROGRESS))
    ).fetchall()
    return {journal: (seq, extra) for journal, seq, extra in found}


def table_exists(db: psycopg.Connection[Any], schema: str, table: str = PROGRESS) -> bool:
    identifier = sql.Identifier(schema, table).as_string(db)
    found = db.execute("SELECT to_regclass(%s)", (identifier,)).fetchone()
    return found is not None and found[0] is not None


def test_open_creates_the_table_after_track_progress_and_not_without(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    make_items(db, schema)
    plain = PostgresUpsert(dsn, "items", "k", schema=schema)
    assert plain.records_progress is False
    plain.open()
    plain.write(rows_of(plain, (1, 1)))
    plain.close()
    assert not table_exists(db, schema)

    in_public = table_exists(db, "public")  # another test's queue may have made that one
    sink = PostgresUpsert(dsn, "items", "k", schema=schema)
    sink.track_progress()
    assert sink.records_progress is True
    sink.open()
    sink.close()
    assert table_exists(db, schema)
    assert table_exists(db, "public") == in_public  # in the target table's schema only
    columns = db.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
           FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0
           ORDER BY a.attnum""",
        (sql.Identifier(schema, PROGRESS).as_string(db),),
    ).fetchall()
    assert columns == [
        ("journal", "text", True),
        ("applied_seq", "bigint", True),
        ("applied_extra", "bigint[]", True),
        ("owner", "text", True),
        ("updated_at", "timestamp with time zone", True),
    ]
    sink.open()  # again, on the table it made: checked, accepted
    sink.close()


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_rows_and_progress_commit_together_and_a_second_write_updates_it(
    dsn: str, db: psycopg.Connection[Any], schema: str, method: str
) -> None:
    make_items(db, schema)
    sink = sink_on(dsn, schema, method=method)
    try:
        sink.write(rows_of(sink, (1, 1), (2, 2)), [mark("events/h-1/0", 5)])
        assert items(db, schema) == [(1, 1), (2, 2)]
        assert progress(db, schema) == {"events/h-1/0": (5, [])}
        first = db.execute(named("SELECT updated_at FROM {}", (schema, PROGRESS))).fetchone()
        sink.write(
            rows_of(sink, (1, 10), (3, 3)), [mark("events/h-1/0", 9, (11, 13), after=(5, ()))]
        )
    finally:
        sink.close()
    assert items(db, schema) == [(1, 10), (2, 2), (3, 3)]
    assert progress(db, schema) == {"events/h-1/0": (9, [11, 13])}
    second = db.execute(named("SELECT updated_at FROM {}", (schema, PROGRESS))).fetchone()
    assert first is not None and second is not None and second[0] > first[0]


@pytest.mark.parametrize("refusal", ["check", "trigger"])
@pytest.mark.parametrize("method", WRITE_METHODS)
def test_a_failing_batch_leaves_the_progress_as_it_was(
    dsn: str, db: psycopg.Connection[Any], schema: str, method: str, refusal: str
) -> None:
    """One row of the batch is refused (by the CHECK, or by a trigger that raises): neither the
    batch's rows nor its progress is committed."""
    make_items(db, schema)
    if refusal == "trigger":
        db.execute(
            named(
                """CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$
                   BEGIN
                     IF NEW.k = 13 THEN RAISE EXCEPTION 'no 13'; END IF;
                     RETURN NEW;
                   END $$""",
                (schema, "refuse_13"),
            )
        )
        db.execute(
            named(
                "CREATE TRIGGER refuse_13 BEFORE INSERT OR UPDATE ON {} "
                "FOR EACH ROW EXECUTE FUNCTION {}()",
                (schema, "items"),
                (schema, "refuse_13"),
            )
        )
    refused = (13, 1) if refusal == "trigger" else (4, -1)
    expected = pe.RaiseException if refusal == "trigger" else pe.CheckViolation
    sink = sink_on(dsn, schema, method=method)
    try:
        sink.write(rows_of(sink, (1, 1)), [mark("lane/0", 5, (7,))])
        with pytest.raises(expected):
            sink.write(rows_of(sink, (1, 2), (2, 2), refused), [mark("lane/0", 9, after=(5, (7,)))])
        assert items(db, schema) == [(1, 1)]
        assert progress(db, schema) == {"lane/0": (5, [7])}
        # The connection is fine afterwards, and the next write records its own progress.
        sink.write(rows_of(sink, (3, 3)), [mark("lane/0", 10, after=(5, (7,)))])
    finally:
        sink.close()
    assert items(db, schema) == [(1, 1), (3, 3)]
    assert progress(db, schema) == {"lane/0": (10, [])}


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_several_sources_in_one_write(
    dsn: str, db: psycopg.Connection[Any], schema: str, method: str
) -> None:
    make_items(db, schema)
    sink = sink_on(dsn, schema, method=method)
    marks = [mark(f"events/h-{i}/0", 100 + i, tuple(range(101 + i, 103 + i))) for i in range(30)]
    marks.append(mark("quote'd %s _x", 2**63 - 1, (-(2**63),)))  # odd text and bigint's bounds
    again = [m._replace(expected=(m.applied_seq, m.applied_extra)) for m in marks[:2]]
    try:
        sink.write(rows_of(sink, (1, 1)), marks[:2])
        sink.write(rows_of(sink, (2, 2)), again + marks[2:])
    finally:
        sink.close()
    assert items(db, schema) == [(1, 1), (2, 2)]
    assert progress(db, schema) == {m.source: (m.applied_seq, list(m.applied_extra)) for m in marks}


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_rows_of_nulls_only_and_no_rows_at_all(
    dsn: str, db: psycopg.Connection[Any], schema: str, method: str
) -> None:
    """A batch with no value to send (unnest counts its rows with generate_series), and a
    write of marks only."""
    db.execute(
        named(
            "CREATE TABLE {} (id int GENERATED ALWAYS AS IDENTITY, a int, b text)", (schema, "log")
        )
    )
    sink = PostgresUpsert(dsn, "log", None, schema=schema, method=method)
    sink.track_progress()
    sink.open()
    try:
        sink.write([sink.prepare({"a": None, "b": None})[1]] * 2, [mark("log/0", 2)])
        sink.write([], [mark("log/0", 3, after=(2, ())), mark("log/1", 1)])
        sink.write([], [])  # nothing at all
    finally:
        sink.close()
    assert db.execute(named("SELECT count(*) FROM {}", (schema, "log"))).fetchone() == (2,)
    assert progress(db, schema) == {"log/0": (3, []), "log/1": (1, [])}


def test_read_progress_by_prefix_and_forget_progress(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    make_items(db, schema)
    sink = sink_on(dsn, schema)
    sources = ["ev_1/a/0", "ev_1/a/1", "evX1/a/0", "ev%1/a/0", "ev_1/b/0", "ev_10/a/0"]
    try:
        sink.write(rows_of(sink, (1, 1)), [mark(s, i, (i + 2,)) for i, s in enumerate(sources)])
        assert sink.read_progress("ev_1/a/") == {
            "ev_1/a/0": (0, frozenset({2})),
            "ev_1/a/1": (1, frozenset({3})),
        }
        # % and _ are characters, not wildcards.
        assert sink.read_progress("ev%") == {"ev%1/a/0": (3, frozenset({5}))}
        assert set(sink.read_progress("ev_1")) == {
            "ev_1/a/0",
            "ev_1/a/1",
            "ev_1/b/0",
            "ev_10/a/0",
        }
        assert sink.read_progress("nothing") == {}
        assert set(sink.read_progress("")) == set(sources)
        assert sink.forget_progress("ev_1/a/") == 2
        assert sink.forget_progress("ev_1/a/") == 0
        assert sink.forget_progress("ev%") == 1
        assert set(sink.read_progress("")) == {"evX1/a/0", "ev_1/b/0", "ev_10/a/0"}
        for _ in range(6):  # psycopg prepares a query run 5 times; these must not be
            sink.read_progress("ev")
        with pytest.raises(TypeError, match="prefix must be a str"):
            sink.read_progress(b"ev")  # type: ignore[arg-type]
    finally:
        sink.close()
    assert set(progress(db, schema)) == {"evX1/a/0", "ev_1/b/0", "ev_10/a/0"}
    with pytest.raises(RuntimeError, match="not open"):
        sink.read_progress("ev")
    plain = PostgresUpsert(dsn, "items", "k", schema=schema)
    plain.open()
    try:
        with pytest.raises(RuntimeError, match="track_progress"):
            plain.forget_progress("ev")
    finally:
        plain.close()


def test_marks_are_checked_at_the_write_that_gives_them(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    make_items(db, schema)
    sink = sink_on(dsn, schema)
    bad: list[tuple[Any, type[Exception], str]] = [
        ("lane/0", TypeError, "progress must be a sequence"),
        ([("lane/0", 1, ())], TypeError, r"progress\[0\] must be a ProgressMark"),
        ([mark("lane/0", 1), mark(7, 1)], TypeError, r"progress\[1\]: source and owner"),  # type: ignore[arg-type]
        ([mark("a", 1), mark("a", 2)], ValueError, "marked twice"),
        ([mark("a", 2**63)], ValueError, "seq must be an int within bigint"),
        ([mark("a", True)], ValueError, "seq must be an int"),
        ([mark("a", 1, [2])], ValueError, "extra must be a tuple of ints"),  # type: ignore[arg-type]
        ([mark("a", 1, after=(1, [2]))], ValueError, "expected: extra must be"),  # type: ignore[arg-type]
    ]
    try:
        for marks, kind, message in bad:
            with pytest.raises(kind, match=message):
                sink.write(rows_of(sink, (1, 1)), marks)
    finally:
        sink.close()
    assert items(db, schema) == []
    plain = PostgresUpsert(dsn, "items", "k", schema=schema)
    plain.open()
    try:
        with pytest.raises(ValueError, match="track_progress"):
            plain.write(rows_of(plain, (1, 1)), [mark("a", 1)])
    finally:
        plain.close()
    assert items(db, schema) == []


def test_write_on_records_progress_in_the_callers_transaction(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    make_items(db, schema)
    sink = PostgresUpsert(dsn, "items", "k", schema=schema)
    sink.track_progress()
    with psycopg.connect(dsn) as conn:
        sink.configure(conn)  # creates the table in the caller's transaction
        conn.commit()
        sink.write_on(conn, rows_of(sink, (1, 1)), [mark("app/0", 1)])
        conn.rollback()
        assert progress(db, schema) == {} and items(db, schema) == []
        sink.write_on(conn, rows_of(sink, (1, 1)), [mark("app/0", 2, (4,))])
        assert progress(db, schema) == {}  # not committed yet
        conn.commit()
    assert items(db, schema) == [(1, 1)]
    assert progress(db, schema) == {"app/0": (2, [4])}


@pytest.fixture
def one_connection(dsn: str) -> Iterator[ConnectionPool[Any]]:
    with ConnectionPool(
        dsn, connection_class=CountingConnection, min_size=1, max_size=1, open=True
    ) as pool:
        yield pool


@pytest.mark.parametrize(
    ("method", "fewest", "most"), [("unnest", 1, 1), ("copy", 3, 5), ("executemany", 100, 1000)]
)
def test_marks_add_no_round_trip_to_unnest_and_copy(
    db: psycopg.Connection[Any],
    schema: str,
    one_connection: ConnectionPool[Any],
    method: str,
    fewest: int,
    most: int,
) -> None:
    """The socket waits of a batch of 100 rows with 3 marks are those of one without
    (tests/integration/test_methods.py): unnest's is still one statement."""
    make_items(db, schema)
    sink = sink_on(one_connection, schema, method=method)
    marks = [mark(f"lane/{i}", 1, (3,)) for i in range(3)]
    again = [mark(f"lane/{i}", 2, (3,), after=(1, (3,))) for i in range(3)]
    try:
        rows = rows_of(sink, *((k, 1) for k in range(100)))
        sink.write(rows, marks)  # a first write may check the connection
        CountingConnection.waits = 0
        sink.write(rows, again)
        waits = CountingConnection.waits
    finally:
        sink.close()
    assert fewest <= waits <= most
    assert len(progress(db, schema)) == 3


@pytest.mark.parametrize("method", ["unnest", "copy"])
def test_write_timeout_and_interrupt_cover_the_progress(
    dsn: str, db: psycopg.Connection[Any], schema: str, method: str
) -> None:
    """A write that waits on the progress table (locked by another transaction) is cancelled
    at write_timeout, or at once by interrupt(); neither its rows nor its progress lands."""
    make_items(db, schema)
    sink = sink_on(dsn, schema, method=method, write_timeout=1.0)
    try:
        sink.write(rows_of(sink, (1, 1)), [mark("lane/0", 1)])
        with psycopg.connect(dsn) as locker:
            locker.execute(named("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", (schema, PROGRESS)))
            with pytest.raises(pe.QueryCanceled):
                sink.write(rows_of(sink, (2, 2)), [mark("lane/0", 2, after=(1, ()))])
            locker.rollback()

        slow = sink_on(dsn, schema, method=method, write_timeout=120.0)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                slow.write(rows_of(slow, (3, 3)), [mark("lane/0", 3, after=(1, ()))])
            except BaseException as error:
                errors.append(error)

        with psycopg.connect(dsn) as locker:
            locker.execute(named("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", (schema, PROGRESS)))
            writer = threading.Thread(target=write)
            writer.start()
            assert wait_until(lambda: waiting_on_a_lock(db))
            slow.interrupt()
            writer.join(30)
            locker.rollback()
        slow.close()
        assert not writer.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], pe.QueryCanceled), errors
    finally:
        sink.close()
    assert items(db, schema) == [(1, 1)]
    assert progress(db, schema) == {"lane/0": (1, [])}


def test_a_progress_table_created_meanwhile_by_another_process_is_used(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    """open() is creating the table while another session's CREATE of it is not yet committed:
    the server makes open() wait, then refuses its CREATE (a duplicate); open() looks again
    and uses the other's table."""
    make_items(db, schema)
    sink = PostgresUpsert(dsn, "items", "k", schema=schema)
    sink.track_progress()
    errors: list[BaseException] = []

    def open_sink() -> None:
        try:
            sink.open()
        except BaseException as error:
            errors.append(error)

    with psycopg.connect(dsn) as other:
        other.execute(ProgressTable(schema).create_statement())
        opener = threading.Thread(target=open_sink)
        opener.start()
        assert wait_until(lambda: waiting_on_a_lock(db))
        other.commit()
    opener.join(30)
    try:
        assert errors == []
        sink.write(rows_of(sink, (1, 1)), [mark("lane/0", 1)])
    finally:
        sink.close()
    assert progress(db, schema) == {"lane/0": (1, [])}


def open_at_once(dsn: str, schema: str, count: int) -> list[BaseException]:
    """Open ``count`` sinks on ``schema`` in threads at the same moment: the errors met."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []
    sinks = [
        PostgresUpsert(dsn, "items", "k", schema=schema, pool_size=count) for _ in range(count)
    ]

    def open_one(sink: PostgresUpsert) -> None:
        sink.track_progress()
        start.wait(30)
        try:
            sink.open()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one, args=(sink,)) for sink in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for sink in sinks:
        sink.close()
    return errors


def test_sinks_opening_at_once_on_a_fresh_schema(dsn: str, db: psycopg.Connection[Any]) -> None:
    """Eight sinks open in threads at the same moment on a schema without the table, five
    times: all open, none errs."""
    for _ in range(5):
        schema = f"wb_progress_{os.getpid()}_{next(_schema_numbers)}"
        db.execute(named("CREATE SCHEMA {}", schema))
        try:
            make_items(db, schema)
            assert open_at_once(dsn, schema, 8) == []
            assert table_exists(db, schema)
        finally:
            db.execute(named("DROP SCHEMA {} CASCADE", schema))


@pytest.mark.parametrize(
    ("columns", "named_problem"),
    [
        (
            "journal text PRIMARY KEY, applied_seq integer NOT NULL, "
            "applied_extra bigint[] NOT NULL DEFAULT '{}', owner text, updated_at timestamptz",
            "column 'applied_seq' is integer, not bigint",
        ),
        (
            "journal text PRIMARY KEY, applied_seq bigint NOT NULL",
            "column 'applied_extra' is missing; column 'owner' is missing; "
            "column 'updated_at' is missing",
        ),
        (
            "journal text, applied_seq bigint NOT NULL, "
            "applied_extra bigint[] NOT NULL DEFAULT '{}', owner text, updated_at timestamptz",
            "column 'journal' is not its primary key",
        ),
        (
            "journal text PRIMARY KEY, applied_seq bigint NOT NULL, "
            "applied_extra bigint[] NOT NULL DEFAULT '{}', owner text, updated_at timestamptz, "
            "origin text NOT NULL",
            "column 'origin' is NOT NULL without a default",
        ),
    ],
    ids=["wrong-type", "missing-columns", "no-key", "extra-required-column"],
)
def test_a_progress_table_of_another_shape_is_refused(
    dsn: str, db: psycopg.Connection[Any], schema: str, columns: str, named_problem: str
) -> None:
    make_items(db, schema)
    db.execute(named(f"CREATE TABLE {{}} ({columns.replace('{}', '{{}}')})", (schema, PROGRESS)))
    sink = PostgresUpsert(dsn, "items", "k", schema=schema)
    sink.track_progress()
    with pytest.raises(SchemaError, match=re.escape(named_problem)) as raised:
        sink.open()
    assert "CREATE TABLE" in str(raised.value)  # and what it should be
    sink.close()


def run_statements(conn: psycopg.Connection[Any], message: str) -> None:
    """Run the SQL statements an error message asks for (after its last ': ')."""
    statements = message.rsplit(": ", 1)[1]
    for statement in filter(None, (s.strip() for s in statements.split(";"))):
        conn.execute(statement.encode())


def test_a_role_that_cannot_create_the_table_is_told_what_to_run(
    private_server: PrivateServer,
) -> None:
    """A role with no CREATE on the schema: SchemaError giving the CREATE TABLE and the GRANT;
    run as the owner, they are all the role needs. A role without the grants is told which."""
    role = "wb_progress_writer"
    with psycopg.connect(private_server.dsn, autocommit=True) as owner:
        owner.execute("CREATE SCHEMA app")
        make_items(owner, "app")
        owner.execute(named("CREATE ROLE {} LOGIN", role))
        owner.execute(named("GRANT USAGE ON SCHEMA app TO {}", role))
        owner.execute(named("GRANT SELECT, INSERT, UPDATE ON app.items TO {}", role))
        conninfo = make_conninfo(private_server.dsn, user=role)
        try:
            sink = PostgresUpsert(conninfo, "items", "k", schema="app")
            sink.track_progress()
            with pytest.raises(SchemaError, match="cannot create it") as raised:
                sink.open()
            message = str(raised.value)
            assert "permission denied for schema app" in message
            assert (
                'CREATE TABLE "app"."writebehind_progress" (journal text PRIMARY KEY, '
                "applied_seq bigint NOT NULL, applied_extra bigint[] NOT NULL DEFAULT '{}', "
                "owner text NOT NULL DEFAULT '', updated_at timestamptz NOT NULL DEFAULT now()); "
                'GRANT SELECT, INSERT, UPDATE, DELETE ON "app"."writebehind_progress" '
                'TO "wb_progress_writer";'
            ) in message
            assert not table_exists(owner, "app")

            # The table made by the owner, without the grants: the role is told which it lacks.
            owner.execute(message.rsplit(": ", 1)[1].split(";")[0].encode())
            owner.execute(named("GRANT SELECT ON {} TO {}", ("app", PROGRESS), role))
            with pytest.raises(SchemaError, match="lacks INSERT, UPDATE, DELETE") as lacking:
                sink.open()
            assert "GRANT SELECT, INSERT, UPDATE, DELETE ON" in str(lacking.value)

            run_statements(owner, str(lacking.value))
            sink.open()
            try:
                sink.write(rows_of(sink, (1, 1)), [mark("lane/0", 4)])
                assert sink.read_progress("lane/") == {"lane/0": (4, frozenset())}
                assert sink.forget_progress("lane/") == 1
            finally:
                sink.close()
        finally:
            owner.execute(named("DROP OWNED BY {}", role))
            owner.execute(named("DROP ROLE {}", role))


def test_a_read_only_server_is_told_what_to_run(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    """A read-only transaction (a standby, or default_transaction_read_only) cannot create."""
    make_items(db, schema)
    readonly = make_conninfo(dsn, options="-c default_transaction_read_only=on")
    sink = PostgresUpsert(readonly, "items", "k", schema=schema)
    sink.track_progress()
    with pytest.raises(SchemaError, match="read-only transaction") as raised:
        sink.open()
    assert "CREATE TABLE" in str(raised.value)
    assert not table_exists(db, schema)


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_a_mark_that_does_not_match_the_table_fails_the_whole_write(
    dsn: str, db: psycopg.Connection[Any], schema: str, method: str
) -> None:
    """Each mark moves its row only from what it expects (the last value written, by its
    owner), or makes it only if none is expected; otherwise ProgressConflict and nothing of
    the write commits."""
    make_items(db, schema)
    sink = sink_on(dsn, schema, method=method)
    try:
        sink.write(rows_of(sink, (1, 1)), [mark("a", 5), mark("b", 1)])
        wrong = [
            [mark("a", 6)],  # expects no row: there is one
            [mark("a", 6, after=(4, ()))],  # expects another value
            [mark("a", 6, after=(5, (7,)))],  # another extra
            [mark("a", 6, after=(5, ()), owner="someone else")],
            [mark("b", 2, after=(1, ())), mark("a", 6, after=(4, ()))],  # one of two
        ]
        for marks in wrong:
            with pytest.raises(ProgressConflict):
                sink.write(rows_of(sink, (2, 2), (3, 3)), marks)
            assert items(db, schema) == [(1, 1)]
            assert progress(db, schema) == {"a": (5, []), "b": (1, [])}
        sink.write(rows_of(sink, (2, 2)), [mark("a", 6, after=(5, ())), mark("c", 1)])
    finally:
        sink.close()
    assert items(db, schema) == [(1, 1), (2, 2)]
    assert progress(db, schema) == {"a": (6, []), "b": (1, []), "c": (1, [])}


def test_claim_takes_a_dead_writers_rows_over_and_its_late_write_is_refused(
    dsn: str, db: psycopg.Connection[Any], schema: str
) -> None:
    """A write of a process that died is still running on the server, waiting on a lock. The
    process that replays its journal claims its progress: once the lock goes, the late write
    is refused whole, and only the replay's rows count."""
    make_items(db, schema)
    dead = sink_on(dsn, schema, method="unnest")
    replaying = sink_on(dsn, schema, method="copy", write_timeout=31.0)
    errors: list[BaseException] = []
    try:
        dead.write(rows_of(dead, (1, 1)), [mark("q/dead/0", 1, owner="q/dead/")])

        def late_write() -> None:
            try:
                # Its progress row is claimed, not moved: only the owner tells it apart.
                marks = [mark("q/dead/0", 2, after=(1, ()), owner="q/dead/")]
                dead.write(rows_of(dead, (2, 1)), marks)
            except BaseException as error:
                errors.append(error)

        with psycopg.connect(dsn) as locker:
            locker.execute(named("LOCK TABLE {} IN SHARE MODE", (schema, "items")))
            writer = threading.Thread(target=late_write)
            writer.start()
            assert wait_until(lambda: waiting_on_a_lock(db))
            claimed = replaying.claim_progress("q/dead/", ["q/dead/0", "q/dead/1"], "q/me/")
            assert claimed == {"q/dead/0": (1, frozenset()), "q/dead/1": (0, frozenset())}
            locker.rollback()
        writer.join(30)
        assert len(errors) == 1 and isinstance(errors[0], ProgressConflict), errors
        replaying.write(
            rows_of(replaying, (2, 5)),
            [
                mark("q/dead/0", 2, after=(1, ()), owner="q/me/"),
                mark("q/dead/1", 1, after=(0, ()), owner="q/me/"),
            ],
        )
    finally:
        dead.close()
        replaying.close()
    assert items(db, schema) == [(1, 1), (2, 5)]
    assert progress(db, schema) == {"q/dead/0": (2, []), "q/dead/1": (1, [])}
