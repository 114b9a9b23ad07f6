"""gunicorn settings for examples/flask_app.py: Prometheus metrics across worker processes.

    export PROMETHEUS_MULTIPROC_DIR=/tmp/metrics   # an empty folder, emptied before each start
    gunicorn --preload -w 4 -c examples/gunicorn.conf.py --chdir examples flask_app:app

Each worker process builds its own queues at its first request and drains them when it exits
(gunicorn stops workers with a normal interpreter exit, so the exit hook runs); keep the
queues' shutdown_timeout below graceful_timeout.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess

graceful_timeout = 30


def child_exit(server: Any, worker: Any) -> None:
    # A dead worker's queue depth must not linger in the `livesum` of the depth gauge.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
