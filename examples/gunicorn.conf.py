"""gunicorn settings for examples/flask_app.py: Prometheus metrics across worker processes, and
with a journal (WRITEBEHIND_JOURNAL) a queue started in each worker as it boots.

    export PROMETHEUS_MULTIPROC_DIR=/tmp/metrics   # an empty folder, emptied before each start
    gunicorn --preload -w 4 -c examples/gunicorn.conf.py --chdir examples flask_app:app

Each worker process builds its own queues at its first request and drains them when it exits
(gunicorn stops workers with a normal interpreter exit, so the exit hook runs); keep the
queues' shutdown_timeout below graceful_timeout.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import multiprocess

graceful_timeout = 30


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's queue depth must not linger in the `livesum` of the depth gauge.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def post_worker_init(worker: Any) -> None:
    # With a journal (WRITEBEHIND_JOURNAL), start the queue now: it replays a dead worker's
    # rows before the first request rather than at it. start() raises when the database cannot
    # be reached; the queue runs anyway, and replays once it can.
    if not os.environ.get("WRITEBEHIND_JOURNAL"):
        return
    from flask_app import wb

    with worker.wsgi.app_context():
        try:
            wb.queue("last_visits").start()
        except Exception as error:
            logging.getLogger("flask_app").warning("the visits queue could not open: %s", error)
