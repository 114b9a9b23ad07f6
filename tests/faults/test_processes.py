"""A process killed mid-stream, and a process that exits with rows it cannot write in time."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
import pytest

from tests.conftest import named, wait_until
from tests.faults.child import SHUTDOWN_TIMEOUT, row
from tests.faults.conftest import assert_accounted, backends, table_rows, tagged

pytestmark = pytest.mark.fault

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A program of ``tests.faults.child`` in a process of its own: commands go to its stdin,
    its JSON lines are read with a timeout (a reader thread), its stderr is kept for messages."""

    def __init__(self, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.child", *arguments],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._lines.put)),
            threading.Thread(target=self._read, args=(self.process.stderr, self._stderr.append)),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, deliver: Any) -> None:
        for line in stream:
            deliver(line)
        deliver(None)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def next(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Its next message; None once it has closed its stdout."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the child said nothing for {timeout}s; stderr: {self.stderr}")
        return None if line is None else dict(json.loads(line))

    @property
    def stderr(self) -> str:
        return "".join(line for line in self._stderr if line is not None)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        for reader in self._readers:
            reader.join(30)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


BATCH = 1000


def test_a_process_killed_mid_stream_loses_the_rows_it_held_and_no_other(
    dsn: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    conninfo, application = tagged(dsn, "killed")

    def in_table() -> int:
        return len(table_rows(db, rows_table))

    with Child("stream", conninfo, rows_table, str(BATCH)) as child:
        child.send("put 0 1500")  # one full batch, written; 500 rows wait
        assert child.next() is not None
        child.send("flush")
        flushed = child.next()
        assert flushed is not None and flushed["flushed"], (flushed, child.stderr)
        child.send("put 1500 1200")  # one more full batch; 200 rows wait for an hour
        last = child.next()
        assert last is not None, child.stderr
        # The child's worker writes the full batch; the 200 rows stay in its memory.
        assert wait_until(lambda: in_table() == 2500)
        child.process.kill()  # SIGKILL: no exit hook, nothing drained
        assert child.process.wait(30) == -9
    assert wait_until(lambda: backends(db, application) == 0)  # nothing still in flight

    accepted = {key: row(key) for key in range(2700)}
    table = table_rows(db, rows_table)
    lost = set(accepted) - set(table)
    # The rows lost are the 200 of the partial batch, which the child counted in its depth
    # when it last reported; all 1,500 rows it reported flushed are in the table.
    assert len(lost) == 1200 - BATCH
    assert last["current_queue_depth"] >= len(lost), last
    assert set(range(1500)) <= set(table)
    assert_accounted(last, accepted, table, lost=lost)


def test_rows_left_at_the_exit_deadline_are_handed_over_as_abandoned_and_the_process_ends(
    dsn: str, db: psycopg.Connection[Any], rows_table: str
) -> None:
    conninfo, application = tagged(dsn, "exit")
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN SHARE MODE", rows_table))  # writers wait
        with Child("exit", conninfo, rows_table, "100") as child:
            assert child.next() == {"put": 100}, child.stderr
            put_at = time.monotonic()
            messages = []
            while (message := child.next()) is not None:
                messages.append(message)
            assert child.process.wait(30) == 0, child.stderr
            ended_after = time.monotonic() - put_at
        assert table_rows(db, rows_table) == {}  # SHARE mode lets readers in
        locker.rollback()
    # The write in flight at the deadline must not land once the lock is gone: its rows were
    # handed over as not written.
    assert wait_until(lambda: backends(db, application) == 0)
    table = table_rows(db, rows_table)
    assert table == {}, f"{len(table)} rows handed over as abandoned were written afterwards"

    failures = [m for m in messages if "failure" in m]
    (exited,) = [m for m in messages if "exited" in m]
    assert failures and all(f["abandoned"] and f["writebehind_error"] for f in failures), failures
    abandoned = [handed for failure in failures for handed in failure["rows"]]
    accepted = {key: row(key) for key in range(100)}
    counted = assert_accounted(exited["exited"], accepted, table, abandoned=abandoned)
    assert counted.abandoned == exited["abandoned_total"] == 100
    assert ended_after < SHUTDOWN_TIMEOUT + 9, f"the process ended {ended_after:.1f}s after"
