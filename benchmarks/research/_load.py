"""A bounded, self-stopping HTTP load generator: client processes on 127.0.0.1.

Each client is a process of its own (``python -m benchmarks.research._load``), so that the
clients' own work does not queue behind one GIL and get measured as the server's. It reads one
JSON command a line on stdin, sends POST requests over one keep-alive ``http.client``
connection (opened again whenever the server closes it) until the command's seconds are up, and
answers with one JSON line. The parent bounds every phase: a client that has not answered
``PHASE_GRACE`` seconds after its phase should have ended is killed, and the phase fails.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from . import checkout_env

__all__ = ["ClientResult", "LoadGenerator", "Target"]

REQUEST_TIMEOUT = 10.0
"""Seconds one request may take before the client counts an error and reconnects."""
PHASE_GRACE = 30.0
"""Seconds past a phase's end a client may take to answer before it is killed."""


@dataclass(frozen=True)
class Target:
    """POST ``{path}{n}`` for page numbers n cycling through ``pages``; ``status`` is the
    answer that counts as accepted."""

    path: str
    status: int
    pages: int = 1000


@dataclass(frozen=True)
class ClientResult:
    """What one client measured in one phase."""

    accepted: int
    errors: int
    elapsed: float
    """Seconds from the phase's start to the client's last answer."""
    latencies: list[float]
    """Seconds of each accepted request, from send to the end of the answer."""


class LoadGenerator:
    """``clients`` client processes, started at once and stopped by close()."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self._processes = [
            subprocess.Popen(
                [sys.executable, "-m", __name__],
                env=checkout_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(clients)
        ]
        self._readers = ThreadPoolExecutor(clients, thread_name_prefix="load-reader")

    def run(self, target: Target, seconds: float) -> list[ClientResult]:
        """Every client sends requests to ``target`` for ``seconds``, starting together.

        TimeoutError (and the clients are stopped) if one does not answer in time.
        """
        start_at = time.time() + 0.2  # the processes' common start: wall clock, one machine
        clients = len(self._processes)
        for index, process in enumerate(self._processes):
            command = {
                "port": self.port,
                "path": target.path,
                "status": target.status,
                "pages": target.pages,
                "first_page": index * target.pages // clients,
                "start_at": start_at,
                "seconds": seconds,
            }
            assert process.stdin is not None
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
        answers = [self._readers.submit(_read_line, process) for process in self._processes]
        _, late = wait(answers, timeout=0.2 + seconds + PHASE_GRACE)
        if late:
            self.close()
            raise TimeoutError(f"{len(late)} load clients did not finish in time")
        return [ClientResult(**json.loads(answer.result())) for answer in answers]

    def close(self) -> None:
        """Stop every client: end of input, then a kill for one that does not exit."""
        for process in self._processes:
            if process.stdin is not None and not process.stdin.closed:
                with contextlib.suppress(OSError):  # it had exited already
                    process.stdin.close()
        for process in self._processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._readers.shutdown(wait=True)  # their reads end: the clients have exited
        for process in self._processes:
            if process.stdout is not None:
                process.stdout.close()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"load client {process.pid} exited (status {process.poll()})")
    return line


def hammer(
    *,
    port: int,
    path: str,
    status: int,
    pages: int,
    first_page: int,
    start_at: float,
    seconds: float,
) -> dict[str, Any]:
    """One client's phase: POST until ``seconds`` after ``start_at`` (a time.time())."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    headers = {"Referer": "http://127.0.0.1/load", "Content-Length": "0"}
    time.sleep(max(0.0, start_at - time.time()))
    started = last = time.perf_counter()
    deadline = started + seconds
    latencies: list[float] = []
    errors = 0
    page = first_page
    while last < deadline:
        sent = last
        try:
            connection.request("POST", f"{path}{page % pages}", headers=headers)
            answer = connection.getresponse()
            answer.read()  # http.client closes the connection if the server said so
            accepted = answer.status == status
        except (OSError, http.client.HTTPException):
            connection.close()  # the next request connects again
            accepted = False
        last = time.perf_counter()
        if accepted:
            latencies.append(last - sent)
        else:
            errors += 1
        page += 1
    connection.close()
    return {
        "accepted": len(latencies),
        "errors": errors,
        "elapsed": last - started,
        "latencies": latencies,
    }


def _main(commands: Iterable[str]) -> None:
    for line in commands:
        result = hammer(**json.loads(line))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _main(sys.stdin)
