"""A Flask application that records page views through a write-behind queue.

    python examples/flask_app.py [--dsn DSN] [--requests N]
        # a self-check: an embedded server (or yours), N requests through Flask's test client

    export WRITEBEHIND_DSN=postgresql://app@db/app
    flask --app examples/flask_app.py init-db                 # create the table
    flask --app examples/flask_app.py writebehind check       # check it, as a deploy step
    gunicorn --preload -w 4 -c examples/gunicorn.conf.py --chdir examples flask_app:app

``POST /views/<page>`` puts a row and answers 202 at once; ``GET /metrics`` serves Prometheus
metrics (aggregated over gunicorn's workers when PROMETHEUS_MULTIPROC_DIR is set).
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
CREATE TABLE IF NOT EXISTS page_views (
    page text PRIMARY KEY,
    views bigint NOT NULL CHECK (views >= 0),
    referrer text,
    seen_at timestamptz NOT NULL
)
"""

log = logging.getLogger("flask_app")
wb = WriteBehind()


def record_failure(rows: list[Mapping[str, Any]], error: BaseException) -> None:
    """on_failure: rows the database refused, or that ran out of retries."""
    log.error("page views not recorded (%s): %s", error, [row["page"] for row in rows])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The application factory; ``config`` overrides the defaults and the environment."""
    app = Flask(__name__)
    app.config["WRITEBEHIND_DSN"] = os.environ.get("WRITEBEHIND_DSN")
    app.config["WRITEBEHIND_QUEUES"] = {
        "page_views": {
            "table": "page_views",
            "key": "page",
            "flush_interval": 0.5,
            "on_failure": record_failure,
        }
    }
    app.config.update(config or {})
    wb.init_app(app)

    @app.post("/views/<path:page>")
    def record_view(page: str) -> tuple[dict[str, Any], int]:
        views = int(request.args.get("views", "1"))
        wb.queue("page_views").put(
            {
                "page": page,
                "views": views,
                "referrer": request.referrer,
                "seen_at": datetime.now(timezone.utc),
            }
        )
        return {"accepted": page}, 202

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
        """Create the page_views table."""
        with psycopg.connect(app.config["WRITEBEHIND_DSN"], autocommit=True) as conn:
            conn.execute(TABLE_DDL)
        print("table page_views is ready")

    return app


def self_check(dsn: str, requests: int) -> bool:
    """Send ``requests`` page views through the test client; check the table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE_DDL)
        conn.execute("TRUNCATE page_views")
    app = create_app({"WRITEBEHIND_DSN": dsn, "TESTING": True})
    client = app.test_client()
    started = time.perf_counter()
    for i in range(requests):
        answer = client.post(f"/views/page/{i % 100}?views={i}")
        assert answer.status_code == 202, answer.text
    with app.app_context():
        queue = wb.queue("page_views")
        wb.close()  # drain: every accepted row is written before the table is read
    metrics = queue.metrics()
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT count(*), sum(views) FROM page_views").fetchone()
    pages, total = found or (0, 0)
    expected = (min(requests, 100), sum(range(max(0, requests - 100), requests)))
    print(f"{requests} requests in {elapsed:.2f}s; table page_views: {pages} pages")
    print(f"queue page_views: {metrics}")
    return (pages, total) == expected


def main() -> int:
    from writebehind.embedded import database

    parser = argparse.ArgumentParser(description="Flask + writebehind self-check")
    parser.add_argument("--dsn", help="conninfo of a PostgreSQL; default: an embedded one")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with database(args.dsn) as dsn:
        ok = self_check(dsn, args.requests)
    print("OK: every page holds its last view count" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
else:
    app = create_app()
