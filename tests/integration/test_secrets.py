"""Neither a password from the conninfo nor a row's values reach the logs, the exceptions or the
repr() of the sink and the queue; keys may, in the log line of a row given up."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest

from tests.conftest import create
from writebehind import PostgresUpsert, WriteBehindQueue

PASSWORD = "Zq8-wb-secret-pw"
VALUE = "value-of-a-person-77"


def closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
    return port  # nothing listens there any more: every connection is refused


@pytest.mark.parametrize("form", ["keywords", "uri"])
def test_a_password_in_the_conninfo_is_in_no_log_error_or_repr_of_a_failing_queue(
    form: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    conninfo = (
        f"host=127.0.0.1 port={port} user=app password={PASSWORD} dbname=app"
        if form == "keywords"
        else f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/app"
    )
    failures: list[tuple[list[Mapping[str, Any]], BaseException]] = []
    caplog.set_level(logging.DEBUG)  # every logger: writebehind's, psycopg's, the pool's
    sink = PostgresUpsert(conninfo, table="entries", key="k", connect_timeout=1)
    wb = WriteBehindQueue(
        sink,
        registry=None,
        max_retry_time=1.0,
        retry_backoff=0.05,
        on_failure=lambda rows, error: failures.append((rows, error)),
    )
    with pytest.raises(psycopg.OperationalError) as raised:
        wb.start()
    wb.put({"k": "key-1", "v": VALUE})
    assert wb.flush(timeout=30)
    wb.close(timeout=10)
    assert len(failures) == 1  # the row was given up, with the connection's error
    seen = [
        caplog.text,
        str(raised.value),
        repr(raised.value),
        str(failures[0][1]),
        repr(sink),
        repr(wb),
    ]
    assert "cannot open the sink" in caplog.text  # the failure was logged
    assert not [text for text in seen if PASSWORD in text]
    # The row given up is named by its key, never by its other values.
    assert "key-1" in caplog.text
    assert VALUE not in caplog.text


def test_a_refused_row_is_logged_by_its_key_and_the_error_without_its_values(
    dsn: str, db: psycopg.Connection[Any], table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    create(db, table_name, "k text PRIMARY KEY, v text NOT NULL CHECK (v <> 'refused')")
    failures: list[tuple[list[Mapping[str, Any]], BaseException]] = []
    with caplog.at_level(logging.DEBUG):
        wb = WriteBehindQueue(
            PostgresUpsert(dsn, table=table_name, key="k"),
            registry=None,
            on_failure=lambda rows, error: failures.append((rows, error)),
        )
        wb.put({"k": "key-ok", "v": VALUE})
        wb.put({"k": "key-refused", "v": "refused"})
        assert wb.flush(timeout=30)
        wb.close(timeout=10)
    [(rows, error)] = failures
    assert rows == [{"k": "key-refused", "v": "refused"}]  # on_failure gets the row itself
    assert "key-refused" in caplog.text and "CheckViolation" in caplog.text
    # The server's DETAIL ("Failing row contains (...)") is not logged, nor any other value.
    assert "Failing row" not in caplog.text
    assert VALUE not in caplog.text and "(key-refused, refused)" not in caplog.text
