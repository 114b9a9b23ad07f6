"""The running parts of one queue, built at construction and again in a forked child: the
buffer, the writers with their deliveries and retry state, the stats, the opener of the sink,
the intake and the on_failure thread."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from .._sink import Sink
from .batch import Entry, combine
from .buffer import RowBuffer
from .callbacks import FailureCallbacks
from .delivery import Delivery, FailureHandler
from .intake import Intake
from .log_text import key_columns
from .metrics import QueueStats
from .opening import SinkOpener
from .retry import Backoff, RetryBudget
from .writers import Writer, Writing, oldest_row_age

__all__ = ["Parts", "build_parts", "weak_handler"]


@dataclass
class Parts:
    """What runs in one queue. None of it holds the queue: a queue nobody references is freed
    at once, and its writers end."""

    buffer: RowBuffer
    writers: list[Writer]
    stats: QueueStats
    opener: SinkOpener
    abandon: threading.Event
    own_threads: set[int]
    """The writers' and the on_failure thread's idents: they never wait for room."""
    intake: Intake
    writing: Writing
    callbacks: FailureCallbacks | None


def build_parts(
    sink: Sink,
    *,
    name: str,
    maxsize: int,
    batch_size: int,
    writers: int,
    coalesce: bool,
    registry: CollectorRegistry | None,
    retry_options: tuple[int | None, float | None, float, float],
    flush_interval: float,
    first_open_wait: float,
    on_failure: Callable[..., Any] | None,
    give_up: FailureHandler,
    clock: Callable[[], float],
    forked: bool,
) -> Parts:
    """A queue's parts, fresh (``forked``: in a child, whose series start afresh)."""
    # Not a bound method: the buffer must not hold the queue.
    combine_rows = partial(_combine_rows, sink) if coalesce else None
    buffer = RowBuffer(maxsize, batch_size, writers, combine_rows)
    lanes: list[Writer] = []
    stats = QueueStats(
        name,
        registry,
        lambda: buffer.put_count,
        lanes=writers,
        oldest_row_age=lambda: oldest_row_age(buffer, lanes, clock),
        fresh_series=forked,
    )
    max_retries, max_retry_time, retry_backoff, retry_backoff_max = retry_options
    abandon = threading.Event()
    # Each writer has its own retry state: an outage is met by each of its writes. Opening
    # the sink (writer 0's job) spends writer 0's.
    budgets = [RetryBudget(max_retries, max_retry_time) for _ in range(writers)]
    backoffs = [Backoff(retry_backoff, retry_backoff_max) for _ in range(writers)]
    for index, (budget, backoff) in enumerate(zip(budgets, backoffs, strict=True)):
        delivery = Delivery(
            sink,
            name=name,
            budget=budget,
            backoff=backoff,
            stats=stats,
            give_up=give_up,
            sleep=abandon.wait,
            clock=clock,
            abandon=abandon,
            deletes=lambda: buffer.deletes,  # batches may hold deletes once one came in
        )
        lanes.append(Writer(index, delivery))
    opener = SinkOpener(sink, name)
    own_threads: set[int] = set()
    intake = Intake(
        sink,
        name=name,
        buffer=buffer,
        opener=opener,
        stats=stats,
        clock=clock,
        own_threads=own_threads,
        first_open_wait=first_open_wait,
    )
    writing = Writing(
        sink,
        buffer=buffer,
        opener=opener,
        stats=stats,
        writers=lanes,
        budget=budgets[0],
        backoff=backoffs[0],
        abandon=abandon,
        flush_interval=flush_interval,
        clock=clock,
        name=name,
    )
    callbacks = (
        None
        if on_failure is None
        else FailureCallbacks(name, on_failure, own_threads, clock, key_columns(sink))
    )
    return Parts(buffer, lanes, stats, opener, abandon, own_threads, intake, writing, callbacks)


def weak_handler(method: Callable[[list[Entry], BaseException], None]) -> FailureHandler:
    """``method`` of the queue, called through a weak reference (no cycle: an unreferenced
    queue is freed at once)."""
    ref = weakref.WeakMethod(method)

    def call(entries: list[Entry], error: BaseException) -> None:
        bound = ref()
        if bound is not None:
            bound(entries, error)

    return call


def _combine_rows(sink: Sink, kept: Entry, newer: Entry) -> Entry:
    """Queue-wide coalescing: the sink's rule for two rows of one key, as inside a batch."""
    try:
        return combine(kept, newer, getattr(sink, "replaces", None), getattr(sink, "merger", None))
    except Exception as error:  # a merge of values that do not add up (str + int, say)
        raise TypeError(
            f"row cannot be merged into the waiting row of its key {newer.key!r}: {error}"
        ) from None
