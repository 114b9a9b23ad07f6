"""A server whose messages are in German (``lc_messages = 'de_DE.UTF-8'``, Debian's
``postgresql-15`` with its translations): a full server and one shutting down are outages at
open (rows accepted, written once it is back), and a refused password still fails at start()
and put(). The SQLSTATE decides, never the message."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import create, require, wait_until
from tests.system_server import SystemServer, missing
from writebehind import PostgresUpsert, WriteBehindQueue

GERMAN = "de_DE.UTF-8"
SLOTS = 4


def german_locale_missing() -> str | None:
    locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    return None if "de_de.utf8" in locales else f"the {GERMAN} locale is not generated"


@pytest.fixture
def german() -> Iterator[SystemServer]:
    require(missing() or german_locale_missing())
    server = SystemServer(
        {
            "lc_messages": f"'{GERMAN}'",
            "max_connections": str(SLOTS),
            "superuser_reserved_connections": "0",
        },
        locale=GERMAN,
    )
    try:
        with psycopg.connect(server.dsn, autocommit=True) as db:
            create(db, "items", "id int PRIMARY KEY, v int")
            db.execute("CREATE ROLE wb_pw LOGIN PASSWORD 'richtig'")
            db.execute("GRANT ALL ON items TO wb_pw")
        server.hba.write_text("local all wb_pw scram-sha-256\n" + server.hba.read_text())
        server.pg_ctl("reload")
        yield server
    finally:
        server.stop()


def items(server: SystemServer) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.dsn) as db:
        return db.execute("SELECT id, v FROM items ORDER BY id").fetchall()


def test_the_server_speaks_german(german: SystemServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="existiert nicht") as raised:
        psycopg.connect(make_conninfo(german.dsn, dbname="nope"))
    assert raised.value.sqlstate is None  # what psycopg gives: a message, no SQLSTATE


def test_a_full_server_at_open_is_an_outage_and_the_rows_follow(german: SystemServer) -> None:
    with ExitStack() as stack:
        for _ in range(SLOTS):
            stack.enter_context(psycopg.connect(german.dsn))
        with pytest.raises(psycopg.OperationalError, match="zu viele Verbindungen"):
            psycopg.connect(german.dsn)
        wb = WriteBehindQueue(
            PostgresUpsert(german.dsn, "items", "id", connect_timeout=2),
            registry=None,
            retry_backoff_max=0.2,
        )
        with pytest.raises(psycopg.OperationalError) as raised:
            wb.start()  # start() says why it cannot open now
        assert raised.value.sqlstate == "53300"
        started = time.monotonic()
        wb.put({"id": 1, "v": 1})  # accepted: not a refused configuration
        assert time.monotonic() - started < 2 + 1.5
        assert not wb.flush(timeout=0.5)
    assert wb.flush(timeout=60)  # the slots are free again
    wb.close(timeout=30)
    assert items(german) == [(1, 1)]


def test_a_server_shutting_down_at_open_is_an_outage_and_the_rows_follow(
    german: SystemServer,
) -> None:
    session = psycopg.connect(german.dsn)  # a smart shutdown waits for it to end
    try:
        german.pg_ctl("-m", "smart", "stop", wait=False)
        assert wait_until(lambda: _refused(german.dsn, "fährt herunter"), timeout=30)
        wb = WriteBehindQueue(
            PostgresUpsert(german.dsn, "items", "id", connect_timeout=2),
            registry=None,
            retry_backoff_max=0.2,
        )
        wb.put({"id": 2, "v": 2})  # accepted
        assert wb.metrics().total_enqueued == 1
        error = wb._opener.error
        assert isinstance(error, psycopg.OperationalError) and error.sqlstate == "57P03"
    finally:
        session.close()
    assert wait_until(lambda: _refused(german.dsn, "No such file"), timeout=30)  # it stopped
    german.start()
    assert wb.flush(timeout=60)
    wb.close(timeout=30)
    assert items(german) == [(2, 2)]


def test_a_refused_password_fails_at_start_and_at_put(german: SystemServer) -> None:
    wrong = make_conninfo(german.dsn, user="wb_pw", password="falsch")
    wb = WriteBehindQueue(PostgresUpsert(wrong, "items", "id"), registry=None)
    with pytest.raises(psycopg.OperationalError, match="Passwort") as raised:
        wb.start()
    assert raised.value.sqlstate == "28P01"
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="Passwort"):
            wb.put({"id": 3, "v": 3})
        assert time.monotonic() - started < 2.0
    assert wb.metrics().total_enqueued == 0
    wb.close(timeout=10)
    right = make_conninfo(german.dsn, user="wb_pw", password="richtig")
    with WriteBehindQueue(PostgresUpsert(right, "items", "id"), registry=None) as ok:
        ok.put({"id": 3, "v": 3})
    assert items(german) == [(3, 3)]


def test_a_missing_database_fails_at_put_by_its_sqlstate(german: SystemServer) -> None:
    wb = WriteBehindQueue(
        PostgresUpsert(make_conninfo(german.dsn, dbname="nope"), "items", "id"), registry=None
    )
    with pytest.raises(psycopg.OperationalError, match="existiert nicht") as raised:
        wb.put({"id": 4, "v": 4})
    assert raised.value.sqlstate == "3D000"
    wb.close(timeout=10)


def _refused(dsn: str, text: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError as error:
        return text in str(error)
    return False
