"""The exit hook's drain, called directly (a real interpreter exit is tested on PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from tests.fakes import FakeSink
from writebehind import RowsAbandoned, WriteBehindQueue
from writebehind.queue.lifecycle import drain_open_queues


def test_exit_drain_writes_every_open_queue() -> None:
    sinks = [FakeSink(), FakeSink()]
    queues = [
        WriteBehindQueue(sink, registry=None, flush_interval=60, name=f"exit-{i}")
        for i, sink in enumerate(sinks)
    ]
    for wb in queues:
        for i in range(7):
            wb.put({"id": i, "value": i})
    drain_open_queues()
    assert [sink.rows_written() for sink in sinks] == [7, 7]
    assert [sink.closed for sink in sinks] == [1, 1]


def test_rows_left_at_the_deadline_go_to_on_failure_as_abandoned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Three rows in a write that never ends (the fake sink cannot be cancelled), four waiting.
    sink = FakeSink()
    sink.gate = threading.Event()
    handed: list[tuple[list[Any], BaseException]] = []
    wb = WriteBehindQueue(
        sink,
        registry=None,
        name="stuck",
        shutdown_timeout=0.2,
        batch_size=3,
        on_failure=lambda rows, error: handed.append((rows, error)),
    )
    for i in range(3):
        wb.put({"id": i, "value": i})
    assert sink.write_started.wait(10)
    for i in range(3, 7):
        wb.put({"id": i, "value": i})
    with caplog.at_level(logging.ERROR, logger="writebehind"):
        drain_open_queues(grace=0.2)
    assert sorted(row["id"] for rows, _ in handed for row in rows) == list(range(7))
    assert all(isinstance(error, RowsAbandoned) for _, error in handed)
    m = wb.metrics()
    assert (m.total_abandoned, m.total_persisted, m.current_queue_depth) == (7, 0, 0)
    assert any("abandoning 7 rows" in r.getMessage() for r in caplog.records)
    assert any(
        "3 rows abandoned" in r.getMessage() and "stuck" in r.getMessage() for r in caplog.records
    )
    sink.gate.set()  # the write ends after all: not counted twice
    wb.close(timeout=10)
    assert wb.metrics().total_abandoned == 7 and wb.metrics().total_persisted == 0
    assert any("ended after all" in r.getMessage() for r in caplog.records)
