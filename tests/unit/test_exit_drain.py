"""The exit hook's drain, called directly (a real interpreter exit is tested on PostgreSQL)."""

from __future__ import annotations

import logging
import threading

import pytest

from tests.fakes import FakeSink
from writebehind import WriteBehindQueue
from writebehind._lifecycle import drain_open_queues


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


def test_exit_drain_logs_abandoned_rows_after_shutdown_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = FakeSink()
    sink.gate = threading.Event()
    wb = WriteBehindQueue(sink, registry=None, name="stuck", shutdown_timeout=0.2)
    for i in range(3):
        wb.put({"id": i, "value": i})
    with caplog.at_level(logging.ERROR, logger="writebehind"):
        drain_open_queues()
    assert any(
        "3 rows abandoned" in r.getMessage() and "stuck" in r.getMessage() for r in caplog.records
    )
    sink.gate.set()
    wb.close(timeout=10)
