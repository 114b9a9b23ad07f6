"""A Flask application that counts the visits of each page through a write-behind queue.

    python examples/flask_app.py [--dsn DSN] [--requests N]
        # a self-check: an embedded server (or yours), N requests through Flask's test client

    export WRITEBEHIND_DSN=postgresql://app@db/app
    flask --app examples/flask_app.py init-db                 # create the table
    flask --app examples/flask_app.py writebehind check       # check it, as a deploy step
    gunicorn --preload -w 4 -c examples/gunicorn.conf.py --chdir examples flask_app:app

``POST /visits/<page>`` puts one visit of the page (a view, when, and the Referer) and answers 202
at once. The queue merges visits into the page's row: ``views`` is summed, ``first_seen`` and
``last_seen`` keep the earliest and the latest time, ``referrer`` the last one written (the visits
of a page in one batch are combined the same way before the statement). ``add`` is at-least-once: a
write retried after its connection was lost during COMMIT may count its visits twice; with
``WRITEBEHIND_JOURNAL=/some/dir`` (a durable journal) it is exactly once, and the visits accepted
by a worker that is killed are written by the worker that replaces it. ``GET /metrics`` serves
Prometheus metrics (aggregated over gunicorn's workers when PROMETHEUS_MULTIPROC_DIR is set). In
tests, ``create_app({"WRITEBEHIND_EAGER": True, ...})`` writes each visit before the view returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import psycopg
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from writebehind.flask import WriteBehind

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS last_visits (
    page varchar(200) PRIMARY KEY,
    views bigint NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    referrer text
)
"""

log = logging.getLogger("flask_app")
wb = WriteBehind()


def record_failure(rows: list[Mapping[str, Any]], error: BaseException) -> None:
    """on_failure: rows the database refused, or that ran out of retries."""
    log.error("visits not recorded (%s): %s", error, [row["page"] for row in rows])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory; ``config`` overrides the defaults and the environment."""
    app = Flask(__name__)
    app.config["WRITEBEHIND_DSN"] = os.environ.get("WRITEBEHIND_DSN")
    app.config["WRITEBEHIND_QUEUES"] = {
        "last_visits": {
            "table": "last_visits",
            "key": "page",
            "merge": {"views": "add", "first_seen": "min", "last_seen": "max"},
            "flush_interval": 0.5,
            "on_failure": record_failure,
        }
    }
    if journal := os.environ.get("WRITEBEHIND_JOURNAL"):
        # Accepted visits survive a killed worker: the worker that replaces it writes them.
        app.config["WRITEBEHIND_QUEUES"]["last_visits"]["journal"] = journal
    app.config.update(config or {})
    wb.init_app(app)

    @app.post("/visits/<path:page>")
    def record_visit(page: str) -> tuple[dict[str, Any], int]:
        now = datetime.now(timezone.utc)
        wb.queue("last_visits").put(
            {
                "page": page,
                "views": 1,
                "first_seen": now,
                "last_seen": now,
                "referrer": request.referrer,
            }
        )
        return {"accepted": page}, 202

    @app.get("/ready")
    def ready() -> tuple[dict[str, Any], int]:
        # For a readiness probe: 503 while the queue is stuck (a database outage, say), so the
        # load balancer sends requests elsewhere. Not for liveness: a restart would not help.
        queue = wb.queue("last_visits")
        lag = queue.metrics().oldest_row_age
        return {"healthy": queue.healthy, "oldest_row_age": lag}, 200 if queue.healthy else 503

    @app.get("/metrics")
    def metrics() -> Response:
        registry: CollectorRegistry = REGISTRY
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            # Under gunicorn every worker writes its own files; read them all.
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the last_visits table."""
        with psycopg.connect(app.config["WRITEBEHIND_DSN"], autocommit=True) as conn:
            conn.execute(TABLE_DDL)
        print("table last_visits is ready")

    return app


def self_check(dsn: str, requests: int) -> bool:
    """Send ``requests`` visits of 100 pages through the test client; check the table: each
    page's view count, its last referrer, and first_seen <= last_seen."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        conn.execute("TRUNCATE last_visits")
    app = create_app({"WRITEBEHIND_DSN": dsn, "TESTING": True})
    client = app.test_client()
    started = time.perf_counter()
    expected: dict[str, tuple[int, str | None]] = {}
    for i in range(requests):
        page, referrer = f"page/{i % 100}", f"https://example.com/from/{i}"
        answer = client.post(f"/visits/{page}", headers={"Referer": referrer})
        assert answer.status_code == 202, answer.text
        expected[page] = (expected.get(page, (0, None))[0] + 1, referrer)
    with app.app_context():
        queue = wb.queue("last_visits")
        wb.close()  # drain: every accepted row is written before the table is read
    metrics = queue.metrics()
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT page, views, referrer, first_seen <= last_seen FROM last_visits"
        ).fetchall()
    found = {page: (views, referrer) for page, views, referrer, _ in rows}
    ordered = all(in_order for *_, in_order in rows)
    views = sum(views for views, _ in found.values())
    print(f"{requests} requests in {elapsed:.2f}s; ", end="")
    print(f"table last_visits: {len(found)} pages, {views} views")
    print(f"queue last_visits: {metrics}")
    return found == expected and ordered


def main() -> int:
    from writebehind.embedded import database

    parser = argparse.ArgumentParser(description="Flask + writebehind self-check")
    parser.add_argument("--dsn", help="conninfo of a PostgreSQL; default: an embedded one")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with database(args.dsn) as dsn:
        ok = self_check(dsn, args.requests)
    print("OK: every page holds its view count and last visit" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
else:
    app = create_app()
