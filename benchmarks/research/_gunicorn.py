"""A gunicorn server in a subprocess on 127.0.0.1, for as long as a ``with`` block lasts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Server", "serve"]

_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_BOOTED = re.compile(r"Booting worker with pid: (\d+)")


@dataclass
class Server:
    """A running gunicorn: its port, its processes and what it has logged so far."""

    process: subprocess.Popen[str]
    port: int = 0
    worker_pids: list[int] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines gunicorn (and the application) wrote to stderr."""
        return "".join(self.log[-lines:])


@contextmanager
def serve(
    app: str,
    *,
    workers: int,
    env: Mapping[str, str],
    start_timeout: float = 60.0,
    stop_timeout: float = 60.0,
) -> Iterator[Server]:
    """Start ``gunicorn --preload -w workers app`` bound to a free port of 127.0.0.1, yield it
    once every worker has booted, and stop it on exit.

    Stopping is gunicorn's graceful stop (SIGTERM: each worker finishes its request and exits
    normally, so that exit hooks run); a server still running ``stop_timeout`` seconds later is
    killed with its workers. RuntimeError if it does not start within ``start_timeout``.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            str(workers),
            "--bind",
            "127.0.0.1:0",
            "--graceful-timeout",
            str(max(1, round(stop_timeout / 2))),
            app,
        ],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the workers are killed with it
    )
    server = Server(process)
    ready = threading.Event()
    reader = threading.Thread(
        target=_read_log, args=(server, workers, ready), name="gunicorn-log", daemon=True
    )
    reader.start()
    try:
        deadline = time.monotonic() + start_timeout
        # The event is set by the log reader; the loop only notices an early exit.
        while not ready.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{server.log_tail()}")
        yield server
    finally:
        _stop(process, stop_timeout)
        reader.join(5)  # it reads to the end of the log, which came with the exit
        if process.stderr is not None:
            process.stderr.close()


def _read_log(server: Server, workers: int, ready: threading.Event) -> None:
    assert server.process.stderr is not None
    for line in server.process.stderr:  # read to the end: a full pipe would block gunicorn
        server.log.append(line)
        if found := _LISTENING.search(line):
            server.port = int(found.group(1))
        elif found := _BOOTED.search(line):
            server.worker_pids.append(int(found.group(1)))
        if server.port and len(server.worker_pids) >= workers:
            ready.set()


def _stop(process: subprocess.Popen[str], timeout: float) -> None:
    if process.poll() is not None:
        return  # it exited (it waits for its workers first)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        # Still alive, so its pid still names the group it leads: itself and its workers.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
