"""The checks of WriteBehindQueue's arguments: each raises TypeError or ValueError naming the
argument, before anything is built."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from .._sink import Sink
from ..journal.options import Journal

__all__ = ["check_int", "check_queue_options", "check_registry", "check_seconds"]


def check_queue_options(
    sink: Sink,
    *,
    maxsize: int,
    batch_size: int,
    flush_interval: float,
    max_retries: int | None,
    max_retry_time: float | None,
    retry_backoff: float,
    retry_backoff_max: float,
    on_failure: Callable[..., Any] | None,
    registry: CollectorRegistry | None,
    name: str | None,
    shutdown_timeout: float,
    writers: int,
    coalesce: bool,
    stuck_after: float,
    journal: Journal | str | os.PathLike[str] | None,
    clock: Callable[[], float],
) -> tuple[str, Journal | None]:
    """Check every argument of a queue; return its name (default: the sink's) and its journal's
    options (None: no journal)."""
    if not isinstance(sink, Sink):
        raise TypeError(f"sink must implement writebehind.Sink, got {type(sink).__name__}")
    check_int("maxsize", maxsize, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_seconds("flush_interval", flush_interval, positive=True)
    if max_retries is not None:
        check_int("max_retries", max_retries, minimum=0)
    if max_retry_time is not None:
        check_seconds("max_retry_time", max_retry_time)
    check_seconds("retry_backoff", retry_backoff)
    check_seconds("retry_backoff_max", retry_backoff_max)
    if retry_backoff_max < retry_backoff:
        raise ValueError("retry_backoff_max must not be less than retry_backoff")
    check_seconds("shutdown_timeout", shutdown_timeout)
    check_int("writers", writers, minimum=1)
    if not isinstance(coalesce, bool):
        raise TypeError(f"coalesce must be a bool, got {type(coalesce).__name__}")
    check_seconds("stuck_after", stuck_after, positive=True)
    if coalesce and getattr(sink, "key", None) == ():
        raise ValueError(
            "coalesce=True needs a sink with a key: an append-only sink (key=None) "
            "writes every row, there is nothing to coalesce"
        )
    if on_failure is not None and not callable(on_failure):
        raise TypeError("on_failure must be a callable(rows, error) or None")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if name == "":
        raise ValueError("name must be a non-empty string or None")
    if not callable(clock):
        raise TypeError("clock must be a callable returning monotonic seconds")
    check_registry(registry)
    journal_options = Journal.of(journal)
    if journal_options is not None:
        check_journal_root(journal_options.root)
    expect_writers = getattr(sink, "expect_writers", None)
    if writers > 1 and expect_writers is not None:
        expect_writers(writers)  # ValueError: more writers than the sink has connections

    queue_name = name or sink.name
    if journal_options is not None and (
        not queue_name or "/" in queue_name or queue_name.startswith(".")
    ):
        raise ValueError(
            f"a queue with a journal needs a name that can name a directory, got {queue_name!r}"
        )
    return queue_name, journal_options


def check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "positive" if positive else "zero or more"
        raise ValueError(f"{name} must be a finite number of seconds, {bound}; got {value}")


def check_journal_root(root: Path) -> None:
    """A journal's directory must be one, or be possible to make: checked without making it
    (nothing is created before the first put, so that a server may fork first)."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"journal: {existing} is not a directory (journal path {root})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"journal: {existing} is not writable by this process ({root})")


def check_registry(value: object) -> None:
    if value is not None and not isinstance(value, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry or None, "
            f"got {type(value).__name__} {value!r}"
        )
