"""The application the app benchmark serves under gunicorn: the Flask example with two more
endpoints, to compare its writebehind endpoint with.

    WRITEBEHIND_DSN=... WRITEBEHIND_BENCH_EXAMPLE=examples/flask_app.py \\
        gunicorn -w 2 benchmarks.research._app_server:app

- ``POST /visits/<page>``: the example's own view: ``put()`` one visit, answer 202.
- ``POST /bench/noop/<page>``: the same answer without the put: the ceiling of the HTTP stack.
- ``POST /bench/direct/<page>``: the same visit written inside the request, through a
  connection pool of the worker's own: one ``INSERT ... ON CONFLICT`` merging it as the queue
  does, committed before the answer.

The example is loaded from the file ``WRITEBEHIND_BENCH_EXAMPLE`` names: it is not part of the
installed package.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

from flask import Flask, request
from psycopg import sql
from psycopg_pool import ConnectionPool

from .app import EXAMPLE_VARIABLE, TABLE

__all__ = ["app", "create_app", "load_example"]

# The visit merged as the example's queue merges it (merge={"views": "add", ...}).
_UPSERT = sql.SQL(
    "INSERT INTO {table} AS existing (page, views, first_seen, last_seen, referrer)"
    " VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (page) DO UPDATE SET"
    " views = existing.views + EXCLUDED.views,"
    " first_seen = LEAST(existing.first_seen, EXCLUDED.first_seen),"
    " last_seen = GREATEST(existing.last_seen, EXCLUDED.last_seen),"
    " referrer = EXCLUDED.referrer"
).format(table=sql.Identifier(TABLE))


def load_example(path: str) -> ModuleType:
    """Import the Flask example from ``path`` as the module ``flask_app``."""
    spec = importlib.util.spec_from_file_location("flask_app", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the Flask example from {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Flask finds the application's root through it
    spec.loader.exec_module(module)
    return module


class _DirectWriter:
    """A pool of this worker's own, opened at its first request (after gunicorn forked)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._pool: ConnectionPool[Any] | None = None
        self._lock = threading.Lock()  # threaded workers (gthread) open one pool, not several

    def write(self, params: tuple[Any, ...]) -> None:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self._conninfo, min_size=1, max_size=4, name="bench-direct", open=True
                    )
                pool = self._pool
        with pool.connection() as conn:  # commits when the block ends
            conn.execute(_UPSERT, params)


def create_app() -> Flask:
    """The example's application, as gunicorn serves it (``flask_app:app``, made by its
    ``create_app()`` from the environment), with the two comparison endpoints."""
    example = load_example(os.environ[EXAMPLE_VARIABLE])
    application: Flask = example.app
    direct = _DirectWriter(application.config["WRITEBEHIND_DSN"])

    @application.post("/bench/noop/<path:page>")
    def noop(page: str) -> tuple[dict[str, Any], int]:
        return {"accepted": page}, 202

    @application.post("/bench/direct/<path:page>")
    def write_in_request(page: str) -> tuple[dict[str, Any], int]:
        now = datetime.now(timezone.utc)
        direct.write((page, 1, now, now, request.referrer))
        return {"accepted": page}, 200

    return application


app = create_app()
