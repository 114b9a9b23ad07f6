"""Fixtures of the queue's unit tests: queues over the fake sink."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.fakes import FakeSink
from writebehind import WriteBehindQueue

Failure = tuple[list[Mapping[str, Any]], BaseException]


@pytest.fixture
def failures() -> list[Failure]:
    return []


@pytest.fixture
def make(sink: FakeSink, failures: list[Failure]) -> Iterator[Any]:
    """Build queues over the fake sink with fast retries; close them all after the test."""
    made: list[WriteBehindQueue] = []

    def build(**options: Any) -> WriteBehindQueue:
        options.setdefault("registry", None)
        options.setdefault("retry_backoff", 0.001)
        options.setdefault("retry_backoff_max", 0.01)
        options.setdefault("flush_interval", 60.0)
        options.setdefault("on_failure", lambda rows, error: failures.append((rows, error)))
        wb = WriteBehindQueue(sink, **options)
        made.append(wb)
        return wb

    yield build
    if sink.gate is not None:
        sink.gate.set()
    for wb in made:
        wb.close(timeout=10)
