"""Through a real PgBouncer in transaction mode: several processes write every row, no retries;
a write past its timeout is cancelled."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

from benchmarks.pgbouncer import pgbouncer_path, running_pgbouncer
from tests.conftest import create, named
from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind._sink import ProgressMark

# The write methods that must work through PgBouncer in transaction mode (None: the default).
METHODS: list[str | None] = [None, "unnest", "copy"]

PROCESSES = 4
ROWS_PER_PROCESS = 10_000


def _admin(conninfo: str, command: str) -> list[dict[str, Any]]:
    """Rows of a PgBouncer admin console command (the ``pgbouncer`` database)."""
    with psycopg.connect(make_conninfo(conninfo, dbname="pgbouncer"), autocommit=True) as conn:
        cur = conn.execute(command)
        names = [column.name for column in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _server_connections_of_idle_clients(conninfo: str) -> tuple[int, int]:
    """(clients, server connections in use) for the test database while two clients sit idle
    between transactions."""
    with psycopg.connect(conninfo) as first, psycopg.connect(conninfo) as second:
        for conn in (first, second):
            with conn.transaction():
                conn.execute("SELECT 1")
        dbname = first.info.dbname
        (pool,) = [p for p in _admin(conninfo, "SHOW POOLS") if p["database"] == dbname]
        return pool["cl_active"], pool["sv_active"]


def test_the_fixture_runs_pgbouncer_in_transaction_mode(bouncer_dsn: str, dsn: str) -> None:
    with psycopg.connect(bouncer_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    config = {row["key"]: row["value"] for row in _admin(bouncer_dsn, "SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"
    assert config.get("max_prepared_statements", "0") == "0"  # none before 1.21

    # A client between transactions holds no server connection; in session mode it keeps one.
    clients, in_use = _server_connections_of_idle_clients(bouncer_dsn)
    assert (clients, in_use) == (2, 0)
    with running_pgbouncer(dsn, pool_mode="session") as session_dsn:
        assert _server_connections_of_idle_clients(session_dsn) == (2, 2)


def _executemany_in_turns(conninfo: str, table: str) -> list[BaseException]:
    """Two connections, each in turn writing 10 rows with executemany in a transaction: the
    errors met. psycopg prepares the statement on the server connection after 5 executions."""
    statement = named(
        "INSERT INTO {} (id, v) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
        table,
    )
    met: list[BaseException] = []
    with psycopg.connect(conninfo) as first, psycopg.connect(conninfo) as second:
        for turn in range(4):
            conn = (first, second)[turn % 2]
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(statement, [(i, turn) for i in range(10)])
            except psycopg.Error as error:
                met.append(error)
    return met


def test_prepared_executemany_breaks_behind_transaction_mode(
    bouncer_dsn: str, dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    """The environment reproduces the 0.1 failure, so that the test below can fail. On a
    PgBouncer of its own, set up like the fixture's, whose server connections keep the
    prepared statements this leaves."""
    create(db, table_name, "id integer PRIMARY KEY, v integer")
    assert _executemany_in_turns(dsn, table_name) == []  # straight to the server: fine
    with running_pgbouncer(dsn) as conninfo:
        met = _executemany_in_turns(conninfo, table_name)
    assert met, "executemany through PgBouncer in transaction mode met no error"
    # The second connection's statement of the same name meets the first's on the one server
    # connection PgBouncer reuses (LIFO), or a prepared name is missing on another one.
    assert all(
        isinstance(e, (errors.DuplicatePreparedStatement, errors.InvalidSqlStatementName))
        for e in met
    ), met


def _write_through(conninfo: str, table: str, first: int, method: str | None) -> dict[str, Any]:
    """In a process of its own: a queue writes its keys twice (updates of existing rows)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("writebehind").addHandler(Collect(logging.WARNING))
    given_up: list[str] = []

    def on_failure(rows: list[Any], error: BaseException) -> None:
        given_up.extend(f"{row['id']}: {error}" for row in rows)

    options: dict[str, Any] = {} if method is None else {"method": method}
    sink = PostgresUpsert(conninfo, table, "id", **options)
    # A bounded retry time keeps a failing run short; any retry fails the test anyway.
    wb = WriteBehindQueue(sink, on_failure=on_failure, registry=None, max_retry_time=5.0)
    with wb:
        for version in (1, 2):
            for i in range(first, first + ROWS_PER_PROCESS):
                wb.put({"id": i, "version": version, "doc": {"id": i, "pid": os.getpid()}})
    metrics = wb.metrics()
    return {
        "persisted": metrics.total_persisted,
        "failed": metrics.total_failed,
        "retries": metrics.total_retries,
        "given_up": given_up[:3],
        "log": messages[:5],
    }


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m or "default")
def test_several_processes_write_every_row_through_pgbouncer(
    bouncer_dsn: str, db: psycopg.Connection[Any], table_name: str, method: str | None
) -> None:
    create(db, table_name, "id bigint PRIMARY KEY, version integer NOT NULL, doc jsonb")
    total = PROCESSES * ROWS_PER_PROCESS
    db.execute(
        named("INSERT INTO {} SELECT i, 0, '{{}}' FROM generate_series(0, %s) AS i", table_name),
        (total - 1,),
    )
    spawn = multiprocessing.get_context("spawn")  # no fork of a process running threads
    with ProcessPoolExecutor(PROCESSES, mp_context=spawn) as processes:
        futures = [
            processes.submit(_write_through, bouncer_dsn, table_name, p * ROWS_PER_PROCESS, method)
            for p in range(PROCESSES)
        ]
        results = [future.result(timeout=90) for future in futures]

    logged = "\n".join([line for r in results for line in r["log"]][:5])
    failed = [r["failed"] for r in results]
    assert failed == [0] * PROCESSES, f"rows given up per process: {failed}\n{logged}"
    retries = [r["retries"] for r in results]
    assert retries == [0] * PROCESSES, f"retries per process: {retries}\n{logged}"
    counts = db.execute(
        named("SELECT count(*), count(*) FILTER (WHERE version = 2) FROM {}", table_name)
    ).fetchone()
    assert counts == (total, total)
    assert sum(r["persisted"] for r in results) == 2 * total


def _processes_started_from(folder: str) -> dict[int, int]:
    """pid -> real uid of the processes whose command line names ``folder`` (Linux /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if folder.encode() not in file.read():
                    continue
            with open(f"/proc/{entry}/status") as file:
                uid = next(line for line in file if line.startswith("Uid:")).split()[1]
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        found[int(entry)] = int(uid)
    return found


def test_pgbouncer_runs_unprivileged_and_is_stopped_and_cleaned_up(
    bouncer_dsn: str, dsn: str
) -> None:
    with running_pgbouncer(dsn, pool_size=2) as conninfo:
        config = {row["key"]: row["value"] for row in _admin(conninfo, "SHOW CONFIG")}
        assert config["default_pool_size"] == "2"
        folder = os.path.dirname(config["auth_file"])
        assert oct(os.stat(folder).st_mode & 0o777) == "0o700"
        (uid,) = _processes_started_from(folder).values()
        assert uid != 0  # pgbouncer refuses root: run as root, it runs as another user
        if os.geteuid() == 0:
            assert os.stat(folder).st_uid == uid  # its files are its user's
    assert not os.path.exists(folder)
    assert _processes_started_from(folder) == {}
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo, connect_timeout=2)


def test_a_tcp_server_with_a_password(bouncer_dsn: str) -> None:
    """A second PgBouncer in front of the first: a TCP dsn; its password is then required."""
    with running_pgbouncer(make_conninfo(bouncer_dsn, password="s3cret")) as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        for password in ("wrong", ""):
            with pytest.raises(psycopg.OperationalError, match="password|SASL"):
                psycopg.connect(make_conninfo(conninfo, password=password), connect_timeout=2)


def test_bad_arguments_are_named(dsn: str) -> None:
    with pytest.raises(ValueError, match="pool_mode"), running_pgbouncer(dsn, pool_mode="txn"):
        pass
    with pytest.raises(ValueError, match="pool_size"), running_pgbouncer(dsn, pool_size=0):
        pass


def test_pgbouncer_path_names_an_executable_or_none() -> None:
    path = pgbouncer_path()
    assert path is None or os.access(path, os.X_OK)


def test_a_write_past_its_timeout_is_cancelled_through_pgbouncer(
    bouncer_dsn: str, dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    """The cancel request that bounds a write reaches the server through PgBouncer: the write
    ends cancelled at write_timeout, not cut off by the watchdog later."""
    create(db, table_name, "id int PRIMARY KEY, v int")
    failures: list[tuple[list[Mapping[str, Any]], BaseException]] = []
    wb = WriteBehindQueue(
        PostgresUpsert(bouncer_dsn, table_name, "id", write_timeout=1.0),
        registry=None,
        max_retry_time=1.5,
        on_failure=lambda rows, error: failures.append((rows, error)),
    )
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", table_name))
        wb.put({"id": 1, "v": 1})
        assert wb.flush(timeout=60)
        locker.rollback()
    wb.close()
    assert [rows for rows, _ in failures] == [[{"id": 1, "v": 1}]]
    assert isinstance(failures[0][1], errors.QueryCanceled), failures[0][1]


@pytest.mark.parametrize("method", ["unnest", "copy"])
def test_rows_and_progress_commit_together_through_pgbouncer(
    bouncer_dsn: str, db: psycopg.Connection[Any], method: str
) -> None:
    """Two sinks (two pools) write batches with progress marks and read them back in turn, more
    times than psycopg takes to prepare a statement: nothing is prepared, so no transaction
    meets another client's statement on the server connection PgBouncer hands it."""
    schema = f"wb_bouncer_progress_{os.getpid()}"
    db.execute(named("CREATE SCHEMA {}", schema))
    try:
        db.execute(named("CREATE TABLE {} (id int PRIMARY KEY, v int)", (schema, "items")))
        sinks = [
            PostgresUpsert(
                bouncer_dsn, "items", "id", schema=schema, method=method, write_timeout=t
            )
            for t in (30.0, 31.0)  # other timeouts, other pools
        ]
        for sink in sinks:
            sink.track_progress()
            sink.open()
        try:
            for batch in range(8):
                for number, sink in enumerate(sinks):
                    rows = [sink.prepare({"id": i, "v": batch})[1] for i in range(number, 100, 2)]
                    after = None if batch == 0 else (batch - 1, (batch + 1,))
                    mark = ProgressMark(f"lane/{number}", batch, (batch + 2,), after, "test")
                    sink.write(rows, [mark])
                    assert sink.read_progress(f"lane/{number}") == {
                        f"lane/{number}": (batch, frozenset({batch + 2}))
                    }
        finally:
            for sink in sinks:
                sink.close()
        assert db.execute(
            named("SELECT count(*), min(v), max(v) FROM {}", (schema, "items"))
        ).fetchone() == (100, 7, 7)
        progress = db.execute(
            named(
                "SELECT journal, applied_seq, applied_extra FROM {} ORDER BY 1",
                (schema, "writebehind_progress"),
            )
        ).fetchall()
        assert progress == [("lane/0", 7, [9]), ("lane/1", 7, [9])]
    finally:
        db.execute(named("DROP SCHEMA {} CASCADE", schema))
