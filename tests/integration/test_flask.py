"""The Flask extension, through Flask's test client, on the real database."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from tests.conftest import select
from writebehind import WriteBehindQueue
from writebehind.flask import WriteBehind

failed_rows: list[Mapping[str, Any]] = []


def remember_failure(rows: list[Mapping[str, Any]], error: BaseException) -> None:
    failed_rows.extend(rows)


def make_app(ext: WriteBehind, dsn: str, table: str, **options: Any) -> Flask:
    """An application factory, as users write them: config, init_app, views."""
    app = Flask(__name__)
    app.config["WRITEBEHIND_DSN"] = dsn
    app.config["WRITEBEHIND_QUEUES"] = {
        "entries": {"table": table, "key": "verikey", "registry": CollectorRegistry(), **options}
    }
    ext.init_app(app)

    @app.post("/entries/<key>")
    def put_entry(key: str) -> tuple[str, int]:
        ext.queue("entries").put({"verikey": key, "n": int(key[1:]), "doc": {}})
        return "", 202

    return app


def writebehind_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("writebehind-")]


def test_rows_put_in_views_reach_the_table(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    ext = WriteBehind()
    app = make_app(ext, dsn, entries)
    assert app.extensions["writebehind"] is ext
    client = app.test_client()
    for i in range(50):
        assert client.post(f"/entries/k{i}").status_code == 202
    with app.app_context():
        assert ext.queue("entries").flush(timeout=30)
        ext.close()
    assert [row[0] for row in select(db, entries, "n")] == sorted(range(50))


def test_nothing_starts_before_the_first_put(dsn: str, entries: str) -> None:
    before = writebehind_threads()
    ext = WriteBehind()
    app = make_app(ext, dsn, entries)
    with app.app_context():
        queue = ext.queue("entries")  # built, not started: no thread, no connection
        assert isinstance(queue, WriteBehindQueue)
        assert queue is ext.queue("entries")
        assert writebehind_threads() == before
        assert "not started" in repr(queue)
    app.test_client().post("/entries/k1")
    assert "writebehind-entries" in writebehind_threads()
    with app.app_context():
        ext.close()


def test_extension_bound_to_one_app_works_outside_an_app_context(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    app = Flask(__name__)
    app.config.update(
        WRITEBEHIND_DSN=dsn,
        WRITEBEHIND_QUEUES={"entries": {"table": entries, "key": "verikey", "registry": None}},
    )
    ext = WriteBehind(app)
    ext.queue("entries").put({"verikey": "a", "n": 1, "doc": None})  # e.g. in a worker thread
    ext.close()
    assert select(db, entries, "verikey, n") == [("a", 1)]


def test_a_factory_made_app_is_found_outside_its_context(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    ext = WriteBehind()
    app = make_app(ext, dsn, entries)
    done = threading.Event()

    def background_job() -> None:  # a thread of the application's, without an app context
        ext.queue("entries").put({"verikey": "bg", "n": 7, "doc": None})
        done.set()

    threading.Thread(target=background_job).start()
    assert done.wait(10)
    with app.app_context():
        ext.close()
    assert select(db, entries, "verikey, n") == [("bg", 7)]


def test_one_extension_serves_two_apps_with_their_own_queues(dsn: str, entries: str) -> None:
    ext = WriteBehind()
    first, second = make_app(ext, dsn, entries), make_app(ext, dsn, entries)
    with first.app_context():
        queue_of_first = ext.queue("entries")
    with second.app_context():
        assert ext.queue("entries") is not queue_of_first
    with pytest.raises(RuntimeError, match="application context"):
        ext.queue("entries")


def test_on_failure_as_a_dotted_path(dsn: str, db: psycopg.Connection[Any], entries: str) -> None:
    failed_rows.clear()
    ext = WriteBehind()
    app = make_app(ext, dsn, entries, on_failure=f"{__name__}.remember_failure")
    client = app.test_client()
    client.post("/entries/k5")
    client.post("/entries/k-1")  # n = -1 breaks the CHECK
    with app.app_context():
        ext.close()
    assert [row["verikey"] for row in failed_rows] == ["k-1"]
    assert select(db, entries, "verikey") == [("k5",)]


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ({"WRITEBEHIND_QUEUES": {"q": {"key": "k"}}}, ValueError, r"\['q'\]\['table'\] is missing"),
        (
            {"WRITEBEHIND_QUEUES": {"q": {"table": "t", "key": "k", "flush_every": 1}}},
            ValueError,
            r"WRITEBEHIND_QUEUES\['q'\]\['flush_every'\] is not an option",
        ),
        (
            {"WRITEBEHIND_QUEUES": {"q": {"table": "t", "key": "k", "maxsize": "big"}}},
            TypeError,
            r"WRITEBEHIND_QUEUES\['q'\]: maxsize must be an int",
        ),
        (
            {"WRITEBEHIND_QUEUES": {"q": {"table": "t", "key": "k", "name": ""}}},
            ValueError,
            r"WRITEBEHIND_QUEUES\['q'\]: name must be a non-empty string",
        ),
        ({"WRITEBEHIND_QUEUES": ["q"]}, TypeError, "WRITEBEHIND_QUEUES must be a dict"),
        (
            {"WRITEBEHIND_DSN": None, "WRITEBEHIND_QUEUES": {"q": {"table": "t", "key": "k"}}},
            ValueError,
            "WRITEBEHIND_DSN must be a conninfo string",
        ),
    ],
)
def test_bad_config_fails_at_init_app_naming_the_key(
    dsn: str, config: dict[str, Any], error: type[Exception], message: str
) -> None:
    app = Flask(__name__)
    app.config["WRITEBEHIND_DSN"] = dsn
    app.config.update(config)
    with pytest.raises(error, match=message):
        WriteBehind(app)
    assert "writebehind" not in app.extensions


def test_unknown_queue_name_is_a_key_error(dsn: str, entries: str) -> None:
    ext = WriteBehind()
    app = make_app(ext, dsn, entries)
    with app.app_context(), pytest.raises(KeyError, match="no queue 'nope'.*'entries'"):
        ext.queue("nope")


def test_check_command_reports_each_queue(dsn: str, entries: str) -> None:
    ext = WriteBehind()
    app = make_app(ext, dsn, entries)
    app.config["WRITEBEHIND_QUEUES"]["missing"] = {"table": "no_such_table", "key": "id"}
    ext.init_app(app)
    result = app.test_cli_runner().invoke(args=["writebehind", "check"])
    assert result.exit_code == 1
    assert f"queue 'entries': table {entries!r} is ready" in result.output
    assert "WRITEBEHIND_QUEUES['missing']: table 'no_such_table' does not exist" in result.output
