"""The Flask extension, through Flask's test client, on the real database."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import psycopg
import psycopg.errors
import pytest
from flask import Flask
from prometheus_client import CollectorRegistry

from tests.conftest import named, select
from writebehind import EagerQueue, PostgresUpsert, QueueClosed, SchemaError, WriteBehindQueue
from writebehind.flask import WriteBehind
from writebehind.queue.eager import OwnConnection

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


def test_merge_in_the_queue_options_counts_every_post_from_several_threads(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    ext = WriteBehind()
    app = make_app(ext, dsn, entries, merge={"n": "add"})
    threads, posts = 4, 50
    statuses: list[int] = []

    def post() -> None:
        client = app.test_client()
        for _ in range(posts):
            statuses.append(client.post("/entries/k1").status_code)  # n = 1 each

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert statuses == [202] * threads * posts
    with app.app_context():
        ext.close()
    assert select(db, entries, "verikey, n") == [("k1", threads * posts)]


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


def test_eager_queue_writes_each_put_before_it_returns(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    failed: list[tuple[list[Mapping[str, Any]], BaseException]] = []
    ext = WriteBehind()
    app = make_app(ext, dsn, entries, on_failure=lambda rows, error: failed.append((rows, error)))
    app.config["WRITEBEHIND_EAGER"] = True
    ext.init_app(app)
    before = writebehind_threads()
    client = app.test_client()
    assert client.post("/entries/k1").status_code == 202
    assert select(db, entries, "verikey, n") == [("k1", 1)]  # committed, no flush, no close
    assert writebehind_threads() == before  # no worker thread

    assert client.post("/entries/k-1").status_code == 202  # n = -1 breaks the CHECK
    [(rows, error)] = failed
    assert rows == [{"verikey": "k-1", "n": -1, "doc": {}}]  # as put, as a queue hands them
    assert isinstance(error, psycopg.errors.CheckViolation)
    assert client.post("/entries/k2").status_code == 202  # the connection is still usable
    assert select(db, entries, "verikey") == [("k1",), ("k2",)]

    with app.app_context():
        queue = ext.queue("entries")
        assert isinstance(queue, EagerQueue)
        assert queue.name == "entries"
        with pytest.raises(ValueError, match="unknown column"):  # checked as a queue does
            queue.put({"verikey": "k3", "n": 3, "doc": None, "extra": 1})
        with pytest.raises(TypeError, match="not JSON"):
            queue.put({"verikey": "k3", "n": 3, "doc": {1j}})
        assert queue.flush(timeout=0) is True
        assert queue.pending_rows() == 0
        metrics = queue.metrics()
        assert (metrics.total_enqueued, metrics.total_persisted, metrics.total_failed) == (3, 2, 1)
        assert metrics.total_batches == 2 and metrics.current_queue_depth == 0
        ext.close()
        with pytest.raises(QueueClosed):
            queue.put({"verikey": "k4", "n": 4, "doc": None})
        assert ext.queue("entries") is not queue  # a new one after close()


def test_eager_queue_refuses_a_missing_table_at_its_first_put(dsn: str) -> None:
    app = Flask(__name__)
    app.config.update(
        WRITEBEHIND_DSN=dsn,
        WRITEBEHIND_EAGER=True,
        WRITEBEHIND_QUEUES={"q": {"table": "no_such_table", "key": "id", "registry": None}},
    )
    ext = WriteBehind(app)
    with pytest.raises(SchemaError, match="no_such_table"):
        ext.queue("q").put({"id": 1})
    with (
        EagerQueue(
            PostgresUpsert(dsn, "no_such_table", "id"), OwnConnection(dsn), registry=None
        ) as queue,
        pytest.raises(SchemaError),
    ):
        queue.start()


def test_eager_queue_metrics_add_up_while_threads_put(
    dsn: str, db: psycopg.Connection[Any], entries: str
) -> None:
    queue = EagerQueue(PostgresUpsert(dsn, entries, "verikey"), OwnConnection(dsn), registry=None)
    snapshots = []
    stop = threading.Event()

    def watch() -> None:  # samples the counters while the producers put
        while not stop.wait(0.001):
            snapshots.append(queue.metrics())

    def produce(first: int) -> None:
        for i in range(first, first + 100):
            queue.put({"verikey": f"k{i}", "n": i % 7 - 1, "doc": None})  # n = -1 refused

    watcher = threading.Thread(target=watch)
    watcher.start()
    producers = [threading.Thread(target=produce, args=(i * 100,)) for i in range(3)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    stop.set()
    watcher.join()
    queue.close()
    final = queue.metrics()
    snapshots.append(final)
    for m in snapshots:
        assert m.total_enqueued == m.total_persisted + m.total_failed + m.current_queue_depth
        assert m.current_queue_depth >= 0
    refused = sum(1 for i in range(300) if i % 7 == 0)
    assert (final.total_enqueued, final.total_failed) == (300, refused)
    assert db.execute(named("SELECT count(*) FROM {}", entries)).fetchone() == (300 - refused,)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_eager_setting_must_be_a_bool(dsn: str, value: object) -> None:
    app = Flask(__name__)
    app.config.update(WRITEBEHIND_DSN=dsn, WRITEBEHIND_EAGER=value, WRITEBEHIND_QUEUES={})
    with pytest.raises(TypeError, match=f"WRITEBEHIND_EAGER must be True or False, got {value!r}"):
        WriteBehind(app)
    assert "writebehind" not in app.extensions
