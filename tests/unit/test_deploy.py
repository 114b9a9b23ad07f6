"""Several writers, queue-wide coalescing, liveness and lag, forks that skip the at-fork hooks:
the queue's logic, over the fake sink."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.fakes import POISON, FakeSink, row
from writebehind import WriteBehindQueue
from writebehind.queue import lifecycle
from writebehind.queue.lifecycle import drain_open_queues
from writebehind.queue.metrics import QueueStats

Failure = tuple[list[Mapping[str, Any]], BaseException]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_several_writers_keep_each_keys_put_order_and_share_the_metrics(
    make: Any, sink: FakeSink
) -> None:
    wb = make(writers=3, batch_size=50, name="three")
    threads = [t for t in threading.enumerate() if t.name.startswith("writebehind-three")]
    assert threads == []  # nothing before the first put
    for value in range(20):
        for key in range(100):
            wb.put(row(key, value))
    assert wb.flush(timeout=10)
    names = sorted(t.name for t in threading.enumerate() if t.name.startswith("writebehind-three"))
    assert names == ["writebehind-three-0", "writebehind-three-1", "writebehind-three-2"]
    assert sink.table == {key: 19 for key in range(100)}  # every key at its last value
    m = wb.metrics()
    assert m.total_enqueued == m.total_persisted == 2000
    assert m.current_queue_depth == 0 and m.oldest_row_age == 0.0
    wb.close(timeout=10)
    assert not [t for t in threading.enumerate() if t.name.startswith("writebehind-three")]
    assert sink.closed == 1  # once, by the last writer to finish


def test_one_slow_writer_does_not_hold_the_others(make: Any, sink: FakeSink) -> None:
    # Rows of other lanes are written while one writer's write is held.
    held = threading.Event()
    release = threading.Event()
    first = {"seen": False}
    write = sink.write

    def write_holding_the_first(rows: Any) -> None:
        if not first["seen"]:
            first["seen"] = True
            held.set()
            assert release.wait(30)
        write(rows)

    sink.write = write_holding_the_first  # type: ignore[method-assign]
    wb = make(writers=2, batch_size=1)
    wb.put(row(0))
    assert held.wait(10)
    others = [key for key in range(1, 200) if hash(key) % 2 != hash(0) % 2][:20]
    for key in others:
        wb.put(row(key))
    assert sink.wait_for_rows(len(others))
    assert 0 not in sink.table
    release.set()
    assert wb.flush(timeout=10)
    assert 0 in sink.table


def test_coalesce_combines_a_waiting_key_in_place_and_takes_no_room(
    make: Any, sink: FakeSink
) -> None:
    wb = make(coalesce=True, maxsize=10, batch_size=10)
    for value in range(1000):  # far beyond maxsize: one row waits, put never blocks
        wb.put_nowait(row("hot", value))
    for key in range(5):
        wb.put_nowait(row(key))
    assert wb.metrics().total_enqueued == 1005
    assert wb.flush(timeout=10)
    assert sink.table["hot"] == 999
    assert sink.rows_written() == 6
    m = wb.metrics()
    assert m.total_persisted == 1005 and m.current_queue_depth == 0


def test_without_coalesce_a_hot_key_fills_the_queue(make: Any, sink: FakeSink) -> None:
    from writebehind import QueueFull

    wb = make(maxsize=10, batch_size=10)
    with pytest.raises(QueueFull):
        for value in range(1000):
            wb.put_nowait(row("hot", value))


def test_a_key_taken_for_writing_is_not_combined_into(make: Any, sink: FakeSink) -> None:
    sink.gate = threading.Event()
    wb = make(coalesce=True, batch_size=1)
    wb.put(row("k", 1))
    assert sink.write_started.wait(10)  # row 1 is being written
    wb.put(row("k", 2))  # waits behind it, not merged into a row already taken
    wb.put(row("k", 3))  # merged into row 2
    sink.gate.set()
    assert wb.flush(timeout=10)
    assert [rows for rows in sink.writes] == [[("k", 1)], [("k", 3)]]
    assert wb.metrics().total_persisted == 3


def test_healthy_until_a_batch_is_stuck_past_stuck_after(make: Any, sink: FakeSink) -> None:
    clock = FakeClock()
    sink.gate = threading.Event()
    wb = make(clock=clock, stuck_after=30, batch_size=1)
    assert wb.healthy  # not started yet
    wb.put(row(1))
    assert sink.write_started.wait(10)
    assert wb.healthy
    clock.now += 29
    assert wb.healthy
    clock.now += 2
    assert not wb.healthy  # one write in progress for 31 s
    assert wb.metrics().oldest_row_age == pytest.approx(31)
    sink.gate.set()
    assert wb.flush(timeout=10)
    assert wb.healthy
    wb.close(timeout=10)
    assert not wb.healthy  # closed: it writes no more


def test_oldest_row_age_and_its_gauge(sink: FakeSink) -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    wb = WriteBehindQueue(sink, registry=registry, clock=clock, flush_interval=3600, name="lag")
    try:
        assert wb.metrics().oldest_row_age == 0.0
        wb.put(row(1))
        clock.now += 5
        wb.put(row(2))
        clock.now += 2.5
        assert wb.metrics().oldest_row_age == pytest.approx(7.5)
        gauge = registry.get_sample_value("writebehind_oldest_row_age_seconds", {"queue": "lag"})
        assert gauge == pytest.approx(7.5)
        assert wb.flush(timeout=10)
        assert wb.metrics().oldest_row_age == 0.0
        assert registry.get_sample_value(
            "writebehind_oldest_row_age_seconds", {"queue": "lag"}
        ) == pytest.approx(0.0)
    finally:
        wb.close(timeout=10)


def test_options_are_checked(sink: FakeSink) -> None:
    with pytest.raises(TypeError, match="writers"):
        WriteBehindQueue(sink, registry=None, writers=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="writers"):
        WriteBehindQueue(sink, registry=None, writers=0)
    with pytest.raises(TypeError, match="coalesce"):
        WriteBehindQueue(sink, registry=None, coalesce="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stuck_after"):
        WriteBehindQueue(sink, registry=None, stuck_after=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_fork_the_at_fork_hook_misses_is_caught_by_put_and_flush(
    make: Any, sink: FakeSink
) -> None:
    wb = make()
    wb.put(row(1))
    assert wb.flush(timeout=10)
    sink.gate = threading.Event()
    wb.put(row(2))
    assert sink.write_started.wait(10)  # the parent's writer is inside a write at the fork
    # The at-fork hook resets the queues it knows of; this one it does not, as after a fork
    # that skips the hooks (fork(2) called from C). A raw fork(2) itself cannot be used here:
    # the child's interpreter would keep the parent's GIL and thread states, and could hang.
    lifecycle.forget(wb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # The parent's writer did not come along: flush must not wait for it.
            flushed = wb.flush(timeout=None)
            sink.gate = None
            wb.put(row(3))
            written = wb.flush(timeout=10) and sink.table.get(3) == "v"
            counted = wb.metrics().total_enqueued == 1
            code = 0 if flushed and written and counted else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sink.gate.set()
    assert wb.flush(timeout=10)
    assert sink.table == {1: "v", 2: "v"}


def test_the_age_gauge_follows_a_stalled_write_and_its_end_without_a_scrape(
    sink: FakeSink,
) -> None:
    # In Prometheus' multiprocess mode nothing computes the gauge at scrape time: the queue
    # must have written it when a batch is taken, retried and settled.
    clock = FakeClock()
    registry = CollectorRegistry()
    sink.gate = threading.Event()
    wb = WriteBehindQueue(sink, registry=registry, clock=clock, batch_size=1, name="stall")

    def exported() -> float:  # the value last written, read without a scrape's sync
        return float(wb._stats._oldest_series._value.get())

    try:
        wb.put(row(1))
        assert sink.write_started.wait(10)
        assert exported() == 0.0  # written when the batch was taken
        clock.now += 5.0  # the write stalls for 5 s
        sink.gate.set()
        assert wb.flush(timeout=10)
        assert exported() == 0.0  # written when it settled: no stale age left behind
    finally:
        sink.gate.set()
        wb.close(timeout=10)


def test_a_forked_childs_prometheus_series_start_at_zero(sink: FakeSink) -> None:
    registry = CollectorRegistry()
    wb = WriteBehindQueue(sink, registry=registry, name="forked", flush_interval=60)
    for key in range(10):
        wb.put(row(key))
    assert wb.flush(timeout=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            wb.put(row(100))
            assert wb.flush(timeout=10)
            value = registry.get_sample_value("writebehind_enqueued_total", {"queue": "forked"})
            persisted = registry.get_sample_value(
                "writebehind_persisted_total", {"queue": "forked"}
            )
            code = 0 if (value, persisted) == (1.0, 1.0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert registry.get_sample_value("writebehind_enqueued_total", {"queue": "forked"}) == 10
    wb.close(timeout=10)


def test_an_on_failure_that_hangs_holds_no_writer(
    sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    release = threading.Event()
    called: list[Any] = []

    def hanging(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        called.extend(rows)
        assert release.wait(30)

    wb = WriteBehindQueue(
        sink, registry=None, clock=clock, batch_size=1, stuck_after=30, on_failure=hanging
    )
    try:
        wb.put(row(1, POISON))
        for key in range(2, 12):
            wb.put(row(key))
        assert sink.wait_for_rows(10)  # written while on_failure hangs
        assert not wb.flush(timeout=0.2)  # the barrier includes the on_failure call
        assert wb.healthy
        clock.now += 31
        with caplog.at_level(logging.INFO, logger="writebehind"):
            assert not wb.healthy  # an on_failure call running for longer than stuck_after
            assert not wb.healthy  # said once, when it changes
        said = [r.getMessage() for r in caplog.records if "healthy" in r.getMessage()]
        assert said == ["queue fake: not healthy: an on_failure call has been running for 31s"]
        release.set()
        assert wb.flush(timeout=10)
        assert wb.healthy and [r["id"] for r in called] == [1]
        m = wb.metrics()
        assert (m.total_persisted, m.total_failed) == (10, 1)
    finally:
        release.set()
        wb.close(timeout=10)


def test_an_on_failure_that_hangs_delays_the_exit_by_the_deadline_at_most(
    sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    # Rows abandoned at the deadline are handed to on_failure on its own thread: a callback
    # that never returns does not hold the exiting thread.
    release = threading.Event()
    sink.gate = threading.Event()  # the write under way never ends

    def hanging(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        release.wait(30)

    wb = WriteBehindQueue(
        sink, registry=None, batch_size=2, shutdown_timeout=0.3, on_failure=hanging
    )
    try:
        for key in range(6):
            wb.put(row(key))
        assert sink.write_started.wait(10)
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="writebehind"):
            drain_open_queues(grace=0.3)
        assert time.monotonic() - started < 5
        assert wb.metrics().total_abandoned == 6
        # The first call hangs: the rows behind it are never handed over, and each is logged.
        unsaid = [r.getMessage() for r in caplog.records if "never received" in r.getMessage()]
        assert unsaid and all("RowsAbandoned" in message for message in unsaid)
        # Each is named by its key, never by its other values.
        named = [key for message in unsaid for key in message.rsplit(": ", 1)[1].split(", ")]
        assert len(set(named)) == len(named) == 6 - 2  # all but the first call's
        assert set(named) <= {str(key) for key in range(6)}
        assert "'value'" not in "".join(unsaid)
    finally:
        release.set()
        sink.gate.set()
        wb.close(timeout=10)


def test_a_reset_that_fails_in_a_forked_child_is_tried_again_by_the_next_put(
    sink: FakeSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = {"left": 1}

    class FailingOnce(QueueStats):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("fresh_series") and failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("a reset that fails once")
            super().__init__(*args, **kwargs)

    wb = WriteBehindQueue(sink, registry=None, flush_interval=60)
    wb.put(row(1))
    assert wb.flush(timeout=10)
    monkeypatch.setattr("writebehind.queue.parts.QueueStats", FailingOnce)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the at-fork hook failed (logged); put() must start the reset again
        code = 1
        try:
            wb.put(row(2))
            written = wb.flush(timeout=10) and sink.table.get(2) == "v"
            code = 0 if written and wb.metrics().total_persisted == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wb.close(timeout=10)


def test_a_coalescing_queue_nobody_references_is_freed(sink: FakeSink) -> None:
    import gc
    import weakref

    from tests.conftest import wait_until

    wb = WriteBehindQueue(sink, registry=None, coalesce=True, writers=2, flush_interval=60)
    wb.put(row(1))
    assert wb.flush(timeout=10)
    ref = weakref.ref(wb)
    gc.disable()  # by its reference count alone, once its writers' waits end: no cycle
    try:
        del wb
        assert wait_until(lambda: ref() is None, timeout=20)
    finally:
        gc.enable()
    assert wait_until(lambda: sink.closed == 1, timeout=20)  # by writer 0, once it wakes
