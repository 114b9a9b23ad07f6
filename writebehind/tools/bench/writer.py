"""One timed run of writebehind: rows put into a WriteBehindQueue over a PostgresUpsert."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from ... import PostgresUpsert, WriteBehindQueue
from .workload import KEY, CheckFailed

__all__ = [
    "FLUSH_TIMEOUT",
    "GivenUp",
    "METHODS",
    "MethodUnsupported",
    "RunResult",
    "make_sink",
    "pool_kept",
    "supports_method",
    "writebehind_run",
]

METHODS = ("unnest", "copy", "executemany", "auto")
"""The values of ``PostgresUpsert(method=...)``; "auto" is the default."""
FLUSH_TIMEOUT = 600.0  # seconds; a worker that stops writing fails the run instead of hanging


class MethodUnsupported(RuntimeError):
    """This writebehind's PostgresUpsert has no ``method=`` parameter."""


def supports_method() -> bool:
    """Whether PostgresUpsert takes ``method=`` (older versions have one write path)."""
    return "method" in inspect.signature(PostgresUpsert).parameters


def make_sink(target: str | ConnectionPool[Any], table: str, method: str | None) -> PostgresUpsert:
    """A PostgresUpsert on ``table`` keyed by ``id``; ``method`` None: the default."""
    if method is None:
        return PostgresUpsert(target, table, KEY)
    if not supports_method():
        raise MethodUnsupported(
            f"method={method!r}: this writebehind's PostgresUpsert has no method= parameter "
            "(it has one write path); measure it without --method"
        )
    options: dict[str, Any] = {"method": method}
    return PostgresUpsert(target, table, KEY, **options)


@contextmanager
def pool_kept(dsn: str, table: str) -> Iterator[None]:
    """Keep writebehind's shared pool for ``dsn`` open between runs, as an application's
    would be: an idle sink holds it, so that a run's writes find its connection made, as the
    raw loops, which connect before their clock starts, do. The pool closes an idle connection
    only after 15 s."""
    keeper = PostgresUpsert(dsn, table, KEY)
    keeper.open()
    try:
        yield
    finally:
        keeper.close()


@dataclass(frozen=True)
class RunResult:
    """What one run took: seconds from the first put() to the end of flush(), and how many
    batches (transactions) the worker committed."""

    seconds: float
    batches: int
    retries: int
    put_seconds: float = 0.0
    """Seconds from the first put() to the return of the last."""


class GivenUp:
    """on_failure: counts the rows given up and keeps the first error."""

    def __init__(self) -> None:
        self.rows = 0
        self.first_error: BaseException | None = None

    def __call__(self, rows: list[Any], error: BaseException) -> None:
        self.rows += len(rows)
        if self.first_error is None:
            self.first_error = error

    def check(self) -> None:
        """CheckFailed if any row was given up."""
        if self.rows:
            raise CheckFailed(f"{self.rows} rows given up, first error: {self.first_error!r}")


def writebehind_run(
    target: str | ConnectionPool[Any],
    table: str,
    rows: Sequence[dict[str, Any]],
    batch_size: int,
    method: str | None = None,
    *,
    maxsize: int | None = None,
    writers: int = 1,
    before_timing: Callable[[], None] | None = None,
) -> RunResult:
    """Put ``rows`` into a queue over ``make_sink(target, table, method)`` and flush it.

    ``writers`` is the queue's ``writers`` (rows split by key hash over that many threads).
    Connecting and reading the catalog happen before the clock starts (start()), then
    ``before_timing()`` is called if given (to reset a counter). Metrics are on, as by
    default, in a registry of the run's own so that runs do not add up. CheckFailed when a row
    is given up or flush() does not finish within FLUSH_TIMEOUT.
    """
    given_up = GivenUp()
    options: dict[str, Any] = {} if maxsize is None else {"maxsize": maxsize}
    if writers != 1:  # only then: versions without writers= still run the other sections
        options["writers"] = writers
    with WriteBehindQueue(
        make_sink(target, table, method),
        batch_size=batch_size,
        registry=CollectorRegistry(),
        on_failure=given_up,
        **options,
    ) as wb:
        wb.start()  # connecting and reading the catalog is not part of the timed work
        if before_timing is not None:
            before_timing()
        put = wb.put
        started = time.perf_counter()
        for row in rows:
            put(row)  # waits for room when maxsize rows wait
        put_seconds = time.perf_counter() - started
        flushed = wb.flush(timeout=FLUSH_TIMEOUT)
        elapsed = time.perf_counter() - started
        metrics = wb.metrics()
    if not flushed:
        raise CheckFailed(f"flush() did not finish within {FLUSH_TIMEOUT:.0f}s")
    given_up.check()
    return RunResult(elapsed, metrics.total_batches, metrics.total_retries, put_seconds)
