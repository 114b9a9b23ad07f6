"""Fixtures: a real PostgreSQL (embedded, or WRITEBEHIND_TEST_DSN), fresh tables, registries."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.fakes import FakeSink
from writebehind.embedded import database

DSN_VARIABLE = "WRITEBEHIND_TEST_DSN"


def require(missing: str | None) -> None:
    """Skip a test whose system part is missing (``missing`` says why), or fail it under CI,
    whose ``.ci/run`` installs every such part."""
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}, and CI is set: .ci/run installs it")
    pytest.skip(missing)


def pgbouncer_missing() -> str | None:
    """Why no real PgBouncer can run here, or None."""
    from benchmarks.pgbouncer import pgbouncer_path

    if pgbouncer_path() is None:
        return "pgbouncer is not installed (apt-get install pgbouncer)"
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="run the long versions: 1,000 process kills instead of 50, outages in real time",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test marked soak is the long version of one that runs by default: only with --soak.
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="a long version: run with --soak")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """Conninfo of the test server: WRITEBEHIND_TEST_DSN, else an embedded server for the run."""
    with database(os.environ.get(DSN_VARIABLE)) as conninfo:
        yield conninfo


@pytest.fixture(scope="session")
def bouncer_dsn(dsn: str) -> Iterator[str]:
    """Conninfo through a real PgBouncer in transaction mode in front of the test server.
    Skipped where pgbouncer is not installed; under CI (which installs it) that fails."""
    from benchmarks.pgbouncer import running_pgbouncer

    require(pgbouncer_missing())
    with running_pgbouncer(dsn) as conninfo:
        yield conninfo


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for setting up and checking tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


_table_numbers = itertools.count()


@pytest.fixture
def table_name(db: psycopg.Connection[Any]) -> Iterator[str]:
    """A table name unique to the test; the table is dropped afterwards if the test made it."""
    name = f"wb_test_{os.getpid()}_{next(_table_numbers)}"
    yield name
    db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def entries(db: psycopg.Connection[Any], table_name: str) -> str:
    """A table like an application's cache: key, a checked int, a jsonb document."""
    create(
        db,
        table_name,
        """verikey text PRIMARY KEY,
           n integer NOT NULL CHECK (n >= 0),
           doc jsonb,
           updated_at timestamptz NOT NULL DEFAULT now()""",
    )
    return table_name


def create(db: psycopg.Connection[Any], table: str, columns: str) -> None:
    """CREATE TABLE ``table`` with a column list written out in the test."""
    db.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(columns)))


def named(template: str, *names: str | tuple[str, ...]) -> sql.Composed:
    """``template`` with each ``{}`` filled by a quoted name (a tuple for schema.name)."""
    identifiers = [sql.Identifier(*n) if isinstance(n, tuple) else sql.Identifier(n) for n in names]
    return sql.SQL(template).format(*identifiers)


def select(db: psycopg.Connection[Any], table: str, columns: str = "*") -> list[tuple[Any, ...]]:
    """Every row of ``table``, ordered by its first column."""
    query = sql.SQL("SELECT {} FROM {} ORDER BY 1").format(sql.SQL(columns), sql.Identifier(table))
    return db.execute(query).fetchall()


@contextmanager
def taking_turns(dsn: str, name: str) -> Iterator[None]:
    """Held while a test uses ``name``, a table or database whose name is fixed (an example's
    table, the docs' database ``app``), on the server of ``dsn``: pytest-xdist workers, or
    runs, that share a server (WRITEBEHIND_TEST_DSN) take turns; a worker with a server of its
    own (the embedded one) has locks of its own, and never waits."""
    params = conninfo_to_dict(dsn)
    place = "|".join(str(params.get(key) or "") for key in ("host", "port", "dbname"))
    digest = hashlib.sha256(f"{place}|{name}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"writebehind-test-{digest}.lock"
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture(autouse=True)
def shared_names(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked ``shares(name, ...)`` takes turns on those names (see taking_turns)."""
    mark = request.node.get_closest_marker("shares")
    if mark is None:
        yield
        return
    dsn: str = request.getfixturevalue("dsn")
    with ExitStack() as turns:
        for name in mark.args:
            turns.enter_context(taking_turns(dsn, name))
        yield


def waiting_on_a_lock(db: psycopg.Connection[Any]) -> bool:
    """Whether a session of the test database waits on a lock."""
    found = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    ).fetchone()
    return found is not None and found[0] > 0


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll a condition that no event signals (a server we disturb, another process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


WRITE_METHODS = ("unnest", "copy", "executemany")


@pytest.fixture(params=WRITE_METHODS)
def every_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once per write method: each PostgresUpsert built without ``method`` gets
    it, so that every guarantee is checked on every method (not only the one ``auto`` picks)."""
    from writebehind import PostgresUpsert

    method: str = request.param
    init = PostgresUpsert.__init__

    def init_with_method(self: PostgresUpsert, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("method", method)
        init(self, *args, **kwargs)

    monkeypatch.setattr(PostgresUpsert, "__init__", init_with_method)
    return method


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sink() -> Iterator[FakeSink]:
    fake = FakeSink()
    yield fake
    assert fake.violations == []


class PrivateServer:
    """An embedded server of a test's own, which the test may stop and start again."""

    def __init__(self) -> None:
        import pgserver

        self.folder = tempfile.mkdtemp(prefix="writebehind-pg-private-")
        self._server = pgserver.get_server(self.folder, cleanup_mode="delete")
        self.dsn: str = self._server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.folder, user=self._server.system_user)

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def cleanup(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        yield server
    finally:
        server.cleanup()
