"""The queue's logic, on a fake sink: batching, flush, close, backpressure, retries, isolation."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
import pytest

from tests.fakes import POISON, FakeSink, row
from tests.unit.conftest import Failure
from writebehind import CommitInDoubt, Params, QueueClosed, QueueFull, WriteBehindQueue


def test_nothing_starts_before_the_first_put(make: Any, sink: FakeSink) -> None:
    wb = make(name="lazy")
    assert sink.opened == 0
    assert not [t for t in threading.enumerate() if t.name == "writebehind-lazy"]
    wb.put(row(1))
    workers = [t for t in threading.enumerate() if t.name == "writebehind-lazy"]
    assert sink.opened == 1 and len(workers) == 1 and workers[0].daemon


def test_default_name_comes_from_the_sink(make: Any) -> None:
    assert make().name == "fake"


def test_full_batches_are_written_without_waiting_for_the_interval(
    make: Any, sink: FakeSink
) -> None:
    wb = make(batch_size=10, maxsize=100)
    for i in range(30):
        wb.put(row(i))
    assert sink.wait_for_rows(30)
    assert [len(rows) for rows in sink.writes] == [10, 10, 10]


def test_a_partial_batch_waits_for_the_flush_interval(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=100, flush_interval=0.3)
    started = time.monotonic()
    for i in range(3):
        wb.put(row(i))
    assert sink.wait_for_rows(3)
    assert time.monotonic() - started >= 0.3 - 0.01
    assert [len(rows) for rows in sink.writes] == [3]


def test_flush_writes_the_partial_batch_and_is_a_barrier(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=100)
    for i in range(5):
        wb.put(row(i))
    assert wb.flush(timeout=10)
    assert sink.rows_written() == 5
    assert wb.metrics().current_queue_depth == 0


def test_flush_times_out_while_the_database_is_stuck(make: Any, sink: FakeSink) -> None:
    sink.gate = threading.Event()
    wb = make(batch_size=100)
    wb.put(row(1))
    assert wb.flush(timeout=0.2) is False
    sink.gate.set()
    assert wb.flush(timeout=10) is True
    assert sink.table == {1: "v"}


def test_flush_on_an_unused_queue_returns_at_once(make: Any) -> None:
    assert make().flush(timeout=0) is True


def test_close_drains_closes_the_sink_and_is_idempotent(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=10)
    for i in range(25):
        wb.put(row(i))
    wb.close()
    assert sink.rows_written() == 25
    assert sink.closed == 1
    wb.close()
    assert sink.closed == 1
    with pytest.raises(QueueClosed):
        wb.put(row(99))
    with pytest.raises(QueueClosed):
        wb.put_nowait(row(99))
    assert wb.metrics().total_enqueued == 25


def test_context_manager_closes(make: Any, sink: FakeSink) -> None:
    with make() as wb:
        wb.put(row(1))
    assert sink.table == {1: "v"} and sink.closed == 1


def test_put_after_close_of_an_unstarted_queue(make: Any, sink: FakeSink) -> None:
    wb = make()
    wb.close()
    with pytest.raises(QueueClosed):
        wb.put(row(1))
    assert sink.opened == 0


def test_backpressure_blocks_put_and_put_nowait_raises(make: Any, sink: FakeSink) -> None:
    sink.gate = threading.Event()
    wb = make(maxsize=10, batch_size=5)
    for i in range(5):
        wb.put(row(i))
    assert sink.write_started.wait(10)  # the worker holds rows 0-4, unread, and is stuck
    for i in range(5, 10):
        wb.put(row(i))  # the unread batch keeps its room: 5 more fill the queue
    with pytest.raises(QueueFull) as raised:
        wb.put_nowait(row(10))
    assert isinstance(raised.value, queue.Full)
    with pytest.raises(QueueFull):
        wb.put(row(10), timeout=0.05)

    returned = threading.Event()

    def blocked_put() -> None:
        wb.put(row(10))
        returned.set()

    producer = threading.Thread(target=blocked_put)
    producer.start()
    assert not returned.wait(0.2)
    sink.gate.set()
    assert returned.wait(10)
    producer.join(10)
    assert wb.flush(timeout=10)
    assert sorted(sink.table) == list(range(11))


class SlowReader(FakeSink):
    """Reads 40 rows of its first write, then waits for the gate before reading the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.read_some = threading.Event()

    def write(self, rows: Sequence[Params]) -> None:
        if not self.read_some.is_set():
            iterator = iter(rows)
            for _ in range(40):
                next(iterator)
            self.read_some.set()
            assert self.release.wait(30)
        super().write(list(rows))


def test_room_comes_back_as_the_database_reads_a_batch(make: Any) -> None:
    sink = SlowReader()
    wb = WriteBehindQueue(sink, registry=None, maxsize=64, batch_size=64, flush_interval=60)
    try:
        for i in range(64):
            wb.put(row(i))
        assert sink.read_some.wait(10)
        accepted = 0
        with pytest.raises(QueueFull):
            while accepted < 64:
                wb.put_nowait(row(100 + accepted))
                accepted += 1
        assert accepted == 32  # room is given back 32 rows at a time
    finally:
        sink.release.set()
        wb.close(timeout=10)
    assert len(sink.table) == 96


def test_close_wakes_a_producer_blocked_on_a_full_queue(make: Any, sink: FakeSink) -> None:
    sink.gate = threading.Event()
    wb = make(maxsize=2, batch_size=1)
    wb.put(row(0))
    assert sink.write_started.wait(10)
    wb.put(row(1))  # fills the queue
    outcome: list[BaseException] = []

    def blocked_put() -> None:
        try:
            wb.put(row(2))
        except QueueClosed as error:
            outcome.append(error)

    producer = threading.Thread(target=blocked_put)
    producer.start()
    wb.stop_accepting()
    producer.join(10)
    assert len(outcome) == 1
    sink.gate.set()
    wb.close(timeout=10)
    assert sink.table == {0: "v", 1: "v"}


def test_rows_of_one_key_coalesce_last_put_wins(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=100)
    for value in ["a", "b", "c"]:
        wb.put(row(1, value))
    wb.put(row(2, "x"))
    assert wb.flush(timeout=10)
    assert sink.writes == [[(1, "c"), (2, "x")]]
    m = wb.metrics()
    assert (m.total_enqueued, m.total_persisted, m.total_batches) == (4, 4, 1)


def test_the_last_value_wins_across_batches(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=3)
    for i in range(300):
        wb.put(row(i % 7, i))
    assert wb.flush(timeout=10)
    assert sink.table == {k: max(i for i in range(300) if i % 7 == k) for k in range(7)}


def test_transient_errors_are_retried_in_place_and_in_order(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    sink.failures.extend([psycopg.OperationalError("connection lost")] * 2)
    wb = make(batch_size=2, max_retries=3)
    for i in range(6):
        wb.put(row(i % 2, i))
    assert wb.flush(timeout=10)
    assert sink.writes == [[(0, 0), (1, 1)], [(0, 2), (1, 3)], [(0, 4), (1, 5)]]
    assert sink.table == {0: 4, 1: 5}
    m = wb.metrics()
    assert (m.total_retries, m.total_persisted, m.total_failed) == (2, 6, 0)
    assert failures == []


def test_out_of_retries_rows_go_to_on_failure_and_the_worker_goes_on(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    lost = psycopg.OperationalError("connection lost")
    sink.failures.extend([lost] * 3)
    wb = make(batch_size=100, max_retries=2)
    wb.put(row(1, "a"))
    wb.put(row(2, "b"))
    assert wb.flush(timeout=10)
    assert failures == [([row(1, "a"), row(2, "b")], lost)]
    wb.put(row(3, "c"))
    assert wb.flush(timeout=10)
    assert sink.table == {3: "c"}
    m = wb.metrics()
    assert (m.total_retries, m.total_failed, m.total_persisted) == (2, 2, 1)


def test_poison_rows_are_isolated_and_the_others_committed(
    make: Any, sink: FakeSink, failures: list[Failure], caplog: pytest.LogCaptureFixture
) -> None:
    wb = make(batch_size=100)
    for i in range(20):
        wb.put(row(i, POISON if i in (3, 17) else i))
    with caplog.at_level(logging.ERROR, logger="writebehind"):
        assert wb.flush(timeout=10)
    assert sorted(sink.table) == [i for i in range(20) if i not in (3, 17)]
    assert [rows for rows, _ in failures] == [[row(3, POISON)], [row(17, POISON)]]
    assert all(isinstance(error, psycopg.errors.CheckViolation) for _, error in failures)
    m = wb.metrics()
    assert (m.total_persisted, m.total_failed, m.total_retries) == (18, 2, 0)
    logged = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert "keys 3" in logged and "keys 17" in logged


def test_a_replaced_row_fails_with_the_poison_row_that_replaced_it(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    wb = make(batch_size=100)
    wb.put(row(1, "good"))
    wb.put(row(1, POISON))
    assert wb.flush(timeout=10)
    m = wb.metrics()
    assert (m.total_enqueued, m.total_persisted, m.total_failed) == (2, 0, 2)
    assert [rows for rows, _ in failures] == [[row(1, POISON)]]


def test_rejected_rows_are_logged_without_on_failure(
    make: Any, sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    wb = make(on_failure=None)
    wb.put(row("bad-key", POISON))
    with caplog.at_level(logging.ERROR, logger="writebehind"):
        assert wb.flush(timeout=10)
    assert any("'bad-key'" in r.getMessage() for r in caplog.records)
    assert wb.metrics().total_failed == 1


def test_an_on_failure_that_raises_is_logged_and_the_worker_goes_on(
    make: Any, sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        raise RuntimeError("on_failure is broken")

    wb = make(on_failure=broken)
    with caplog.at_level(logging.ERROR, logger="writebehind"):
        wb.put(row(1, POISON))
        assert wb.flush(timeout=10)
        wb.put(row(2, "ok"))
        assert wb.flush(timeout=10)
    assert sink.table == {2: "ok"}
    assert any("on_failure raised" in r.getMessage() for r in caplog.records)


def test_an_error_every_part_shares_is_retried_whole_then_given_up(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    trigger = psycopg.errors.RaiseException("the trigger refuses every row")
    # Per try: the batch, both halves, then its first and its last row alone.
    sink.failures.extend([trigger] * 10)
    wb = make(max_retries=1, batch_size=8)
    for i in range(8):
        wb.put(row(i))
    assert wb.flush(timeout=10)
    given_up = [([r["id"] for r in rows], error) for rows, error in failures]
    assert given_up == [(list(range(8)), trigger)]
    assert (wb.metrics().total_retries, sink.attempts, sink.table) == (1, 10, {})


@pytest.mark.parametrize(
    "bug",
    [ValueError("zip() argument 2 is shorter than argument 1"), RuntimeError("sink bug")],
    ids=["ValueError", "RuntimeError"],
)
def test_an_error_the_client_raises_for_every_row_is_never_retried(
    make: Any, sink: FakeSink, failures: list[Failure], bug: Exception
) -> None:
    # Raised again by the same rows, whatever the wait: no retry, and with max_retries=None
    # and max_retry_time=None a retry would never end.
    sink.failures.extend([bug] * 5)
    wb = make(max_retries=None, max_retry_time=None, batch_size=8)
    for i in range(8):
        wb.put(row(i))
    assert wb.flush(timeout=10)
    assert [([r["id"] for r in rows], error) for rows, error in failures] == [(list(range(8)), bug)]
    # The batch, both halves, the first and the last row alone; then all given up together.
    assert (wb.metrics().total_retries, sink.attempts, sink.table) == (0, 5, {})
    wb.put(row(9))
    assert wb.flush(timeout=10) and sink.table == {9: "v"}


def test_an_error_the_client_raises_for_one_row_gives_up_that_row_alone(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    bad = TypeError("a value of row 5 cannot be sent")

    def write(rows: Any) -> None:
        if any(key == 5 for key, _ in rows):
            raise bad
        FakeSink.write(sink, rows)

    sink.write = write  # type: ignore[method-assign]
    wb = make(max_retries=None, max_retry_time=None, batch_size=8)
    for i in range(8):
        wb.put(row(i))
    assert wb.flush(timeout=10)
    assert [([r["id"] for r in rows], error) for rows, error in failures] == [([5], bad)]
    assert sorted(sink.table) == [0, 1, 2, 3, 4, 6, 7]
    assert wb.metrics().total_retries == 0


def test_an_error_only_some_rows_cause_is_isolated_to_them(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    refused = [psycopg.errors.RaiseException(f"refused {n}") for n in range(3)]
    # The batch fails, its left half fails, its right half goes through; then the left half's
    # halves: [0, 1] fails, [2, 3] goes through; then row 0 fails alone, row 1 goes through.
    sink.failures.extend([refused[0], refused[1], None, refused[2], None, refused[2], None])
    wb = make(batch_size=8)
    for i in range(8):
        wb.put(row(i))
    assert wb.flush(timeout=10)
    assert [([r["id"] for r in rows], error) for rows, error in failures] == [([0], refused[2])]
    assert sorted(sink.table) == list(range(1, 8))
    assert wb.metrics().total_retries == 0


def test_bad_rows_are_refused_at_put_and_nothing_is_enqueued(make: Any) -> None:
    wb = make()
    with pytest.raises(TypeError):
        wb.put([("id", 1)])
    with pytest.raises(ValueError):
        wb.put({"id": 1})
    assert wb.metrics().total_enqueued == 0


def test_metrics_invariant_holds_while_producers_run(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=50, maxsize=200, flush_interval=0.05)
    producers = [
        threading.Thread(target=lambda p=p: [wb.put(row((p, i))) for i in range(500)])
        for p in range(4)
    ]
    for producer in producers:
        producer.start()
    while any(p.is_alive() for p in producers):
        m = wb.metrics()
        assert m.total_enqueued == m.total_persisted + m.total_failed + m.current_queue_depth
        assert m.current_queue_depth >= 0
        assert m.timestamp.tzinfo is not None
    for producer in producers:
        producer.join(10)
    assert wb.flush(timeout=10)
    m = wb.metrics()
    assert (m.total_enqueued, m.total_persisted, m.current_queue_depth) == (2000, 2000, 0)
    assert len(sink.table) == 2000


def test_close_times_out_and_leaves_the_worker_draining(
    make: Any, sink: FakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.gate = threading.Event()
    wb = make()
    wb.put(row(1))
    with caplog.at_level(logging.WARNING, logger="writebehind"):
        wb.close(timeout=0.1)
    assert any("timed out" in r.getMessage() for r in caplog.records)
    assert sink.closed == 0
    sink.gate.set()
    wb.close(timeout=10)
    assert sink.table == {1: "v"} and sink.closed == 1


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("maxsize", 0, ValueError),
        ("maxsize", 1.5, TypeError),
        ("batch_size", 0, ValueError),
        ("flush_interval", 0, ValueError),
        ("flush_interval", float("nan"), ValueError),
        ("max_retries", -1, ValueError),
        ("retry_backoff", -0.1, ValueError),
        ("retry_backoff_max", 0.01, ValueError),
        ("shutdown_timeout", -1, ValueError),
        ("on_failure", "log", TypeError),
        ("name", "", ValueError),
        ("name", 5, TypeError),
        ("max_retry_time", -1, ValueError),
        ("max_retry_time", "x", TypeError),
        ("clock", 1, TypeError),
        ("registry", "nope", TypeError),
        ("registry", {}, TypeError),
    ],
)
def test_bad_options_name_themselves(
    sink: FakeSink, option: str, value: Any, error: type[Exception]
) -> None:
    options: dict[str, Any] = {"registry": None, "retry_backoff": 0.1, option: value}
    with pytest.raises(error, match=option):
        WriteBehindQueue(sink, **options)


def test_batch_size_is_at_most_maxsize(make: Any, sink: FakeSink) -> None:
    assert make().batch_size == 500
    assert make(maxsize=1000, batch_size=200).batch_size == 200
    small = make(maxsize=5)  # a small queue is fine: its batches hold 5 rows
    assert small.batch_size == 5
    for i in range(5):
        small.put(row(i))
    assert sink.wait_for_rows(5)  # written as a full batch, not after the 60 s flush_interval
    assert [len(rows) for rows in sink.writes] == [5]


def test_a_sink_must_implement_the_protocol() -> None:
    with pytest.raises(TypeError, match="Sink"):
        WriteBehindQueue(object(), registry=None)  # type: ignore[arg-type]


def test_a_queue_started_before_a_fork_starts_afresh_in_the_child(
    make: Any, sink: FakeSink
) -> None:
    wb = make(flush_interval=60)
    wb.put(row(1))
    assert wb.flush(timeout=10)
    wb.put(row(2))  # waits in the parent's queue at the fork: the parent's to write
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, Python 3.12+
        pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            fresh = wb.metrics().total_enqueued == 0 and wb.pending_rows() == 0
            wb.put(row(3))
            written = wb.flush(timeout=10) and 3 in sink.table and 2 not in sink.table
            counted = wb.metrics().total_persisted == 1
            wb.close(timeout=10)
            code = 0 if fresh and written and counted else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wb.put(row(4))  # the parent's queue goes on, its waiting row included
    assert wb.flush(timeout=10)
    assert sink.table == {1: "v", 2: "v", 4: "v"}
    assert wb.metrics().total_persisted == 3


def test_close_from_on_failure_lets_the_worker_finish(make: Any, sink: FakeSink) -> None:
    def close_on_failure(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        wb.close()

    wb = make(on_failure=close_on_failure, batch_size=10)
    for i in range(10):
        wb.put(row(i, POISON if i == 0 else i))
    wb.close(timeout=10)
    assert sorted(sink.table) == list(range(1, 10))  # the batch went on after on_failure
    assert sink.closed == 1


def test_put_many_accepts_all_rows_in_order_or_none(make: Any, sink: FakeSink) -> None:
    wb = make(batch_size=100)
    wb.put_many(row(i, i) for i in range(10))
    with pytest.raises(ValueError, match=r"row 2: bad columns"):
        wb.put_many([row(10), row(11), {"id": 12}])
    with pytest.raises(TypeError, match="row 1"):
        wb.put_many([row(10), ["not", "a", "mapping"]])
    assert wb.metrics().total_enqueued == 10  # nothing of the refused calls
    wb.put_many([])
    assert wb.flush(timeout=10)
    assert sink.writes == [[(i, i) for i in range(10)]]


def test_put_many_waits_for_room_for_all_rows(make: Any, sink: FakeSink) -> None:
    sink.gate = threading.Event()
    wb = make(maxsize=10, batch_size=5)
    wb.put_many([row(i) for i in range(10)])  # full: 5 in flight (held), 5 waiting
    assert sink.write_started.wait(10)
    with pytest.raises(QueueFull):
        wb.put_many([row(10), row(11)], block=False)
    with pytest.raises(QueueFull):
        wb.put_many([row(10), row(11)], timeout=0.05)
    assert wb.metrics().total_enqueued == 10
    with pytest.raises(ValueError, match="never fit"):
        wb.put_many([row(i) for i in range(11)])
    done = threading.Event()

    def put_two() -> None:
        wb.put_many([row(20), row(21)])
        done.set()

    waiter = threading.Thread(target=put_two)
    waiter.start()
    assert not done.wait(0.1)  # no room yet
    sink.gate.set()
    assert done.wait(10)
    waiter.join(10)
    assert wb.flush(timeout=10)
    assert sorted(sink.table) == [*range(10), 20, 21]


def test_put_many_from_on_failure_is_accepted_at_once(make: Any, sink: FakeSink) -> None:
    def put_fixed(rows: list[Mapping[str, Any]], error: BaseException) -> None:
        wb.put_many([row(r["id"], "fixed") for r in rows])

    wb = make(maxsize=2, batch_size=2, on_failure=put_fixed)
    wb.put_many([row(1, POISON), row(2, POISON)])
    assert wb.flush(timeout=10)
    assert wb.flush(timeout=10)
    assert sink.table == {1: "fixed", 2: "fixed"}


def test_rows_whose_commit_was_in_doubt_are_handed_over_as_in_doubt(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    doubt = CommitInDoubt("the connection was lost after COMMIT was sent")
    doubt.__cause__ = lost
    sink.failures.extend([doubt] * 3)
    wb = make(max_retries=2, batch_size=4)
    for i in range(4):
        wb.put(row(i))
    assert wb.flush(timeout=10)
    assert [([r["id"] for r in rows], error) for rows, error in failures] == [([0, 1, 2, 3], doubt)]
    assert failures[0][1].__cause__ is lost
    m = wb.metrics()
    assert (m.total_failed, m.total_in_doubt, m.total_retries) == (4, 4, 2)


def test_a_row_refused_after_an_attempt_in_doubt_is_in_doubt_and_the_others_are_not(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    # Attempt 1 of rows 0-3 lost its COMMIT reply; the retry finds row 2 refused (say, by a
    # unique index its own first attempt filled): it may well be in the table.
    doubt = CommitInDoubt("the connection was lost after COMMIT was sent")
    sink.failures.extend([doubt])
    wb = make(batch_size=4)
    for i in range(4):
        wb.put(row(i, POISON if i == 2 else "v"))
    assert wb.flush(timeout=10)
    ((rows, error),) = failures
    assert [r["id"] for r in rows] == [2]
    assert isinstance(error, CommitInDoubt) and isinstance(error.__cause__, psycopg.Error)
    m = wb.metrics()
    assert (m.total_failed, m.total_in_doubt, m.total_persisted) == (1, 1, 3)


def test_a_write_in_doubt_that_goes_through_on_retry_is_persisted(
    make: Any, sink: FakeSink, failures: list[Failure]
) -> None:
    sink.failures.extend([CommitInDoubt("lost after COMMIT")])
    wb = make()
    wb.put(row(1))
    assert wb.flush(timeout=10)
    m = wb.metrics()
    assert failures == [] and sink.table == {1: "v"}
    assert (m.total_persisted, m.total_failed, m.total_in_doubt, m.total_retries) == (1, 0, 0, 1)
