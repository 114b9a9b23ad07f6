"""Prometheus series and the metrics() snapshot."""

from __future__ import annotations

import dataclasses

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry

from tests.fakes import POISON, FakeSink
from writebehind import Metrics, WriteBehindQueue

COUNTERS = [
    "writebehind_enqueued_total",
    "writebehind_persisted_total",
    "writebehind_failed_total",
    "writebehind_rows_in_doubt_total",
    "writebehind_abandoned_total",
    "writebehind_retries_total",
    "writebehind_batches_total",
]


def value(registry: CollectorRegistry, name: str, queue: str) -> float | None:
    return registry.get_sample_value(name, {"queue": queue})


def test_every_series_exists_at_zero_from_construction(registry: CollectorRegistry) -> None:
    WriteBehindQueue(FakeSink(), registry=registry, name="q1")
    for name in [*COUNTERS, "writebehind_queue_depth", "writebehind_oldest_row_age_seconds"]:
        assert value(registry, name, "q1") == 0.0, name
    for name in ["writebehind_flush_duration_seconds", "writebehind_batch_rows"]:
        assert value(registry, f"{name}_count", "q1") == 0.0, name


def test_series_follow_the_queue(registry: CollectorRegistry) -> None:
    sink = FakeSink()
    with WriteBehindQueue(sink, registry=registry, name="q", flush_interval=60) as wb:
        for i in range(10):
            wb.put({"id": i, "value": POISON if i == 4 else i})
        wb.put({"id": 0, "value": "again"})
        assert value(registry, "writebehind_queue_depth", "q") == 11
        assert wb.flush(timeout=10)
        m = wb.metrics()
    assert value(registry, "writebehind_enqueued_total", "q") == m.total_enqueued == 11
    assert value(registry, "writebehind_persisted_total", "q") == m.total_persisted == 10
    assert value(registry, "writebehind_failed_total", "q") == m.total_failed == 1
    assert value(registry, "writebehind_batches_total", "q") == m.total_batches
    assert value(registry, "writebehind_queue_depth", "q") == 0
    assert value(registry, "writebehind_batch_rows_sum", "q") == 11
    assert value(registry, "writebehind_flush_duration_seconds_count", "q") == 1


def test_queues_share_a_registry_by_label(registry: CollectorRegistry) -> None:
    first = WriteBehindQueue(FakeSink(), registry=registry, name="first")
    second = WriteBehindQueue(FakeSink(), registry=registry, name="second")
    with first, second:
        first.put({"id": 1, "value": 1})
        second.put({"id": 1, "value": 1})
        second.put({"id": 2, "value": 1})
    assert value(registry, "writebehind_enqueued_total", "first") == 1
    assert value(registry, "writebehind_enqueued_total", "second") == 2


def test_the_default_registry_takes_several_queues() -> None:
    first = WriteBehindQueue(FakeSink(), name="default-registry-a")
    second = WriteBehindQueue(FakeSink(), name="default-registry-b")
    first.close()
    second.close()
    registry = prometheus_client.REGISTRY
    assert value(registry, "writebehind_enqueued_total", "default-registry-b") == 0


def test_no_registry_no_series_but_a_snapshot() -> None:
    name = f"unregistered-{id(object())}"
    with WriteBehindQueue(FakeSink(), registry=None, name=name) as wb:
        wb.put({"id": 1, "value": 1})
        assert wb.flush(timeout=10)
        assert wb.metrics().total_persisted == 1
    names = {
        sample.labels.get("queue") for family in REGISTRY.collect() for sample in family.samples
    }
    assert name not in names


def test_metrics_has_exactly_the_documented_fields() -> None:
    assert [f.name for f in dataclasses.fields(Metrics)] == [
        "total_enqueued",
        "total_persisted",
        "total_failed",
        "total_retries",
        "total_batches",
        "current_queue_depth",
        "timestamp",
        "total_abandoned",
        "oldest_row_age",
        "total_replayed",
        "journal_bytes",
        "total_corrupt",
        "total_in_doubt",
        "total_deleted",
    ]
    assert Metrics.__dataclass_params__.frozen  # type: ignore[attr-defined]
