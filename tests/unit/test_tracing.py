"""Each flush is an OpenTelemetry span, read back through the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.fakes import POISON, FakeSink
from writebehind import WriteBehindQueue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def provider_exporter() -> InMemorySpanExporter:
    # The global provider can be set once per process.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def exporter(provider_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    provider_exporter.clear()
    return provider_exporter


def flush_spans(exporter: InMemorySpanExporter, queue: str) -> list[ReadableSpan]:
    spans = exporter.get_finished_spans()
    return [
        s
        for s in spans
        if s.name == "writebehind.flush" and (s.attributes or {}).get("queue") == queue
    ]


def fast_queue(sink: FakeSink, name: str) -> WriteBehindQueue:
    return WriteBehindQueue(
        sink, name=name, registry=None, retry_backoff=0.001, retry_backoff_max=0.001
    )


def test_a_flush_is_a_span_with_rows_attempt_and_outcome(
    exporter: InMemorySpanExporter, sink: FakeSink
) -> None:
    with fast_queue(sink, "traced") as wb:
        for i in range(3):
            wb.put({"id": i, "value": "v"})
        assert wb.flush(timeout=10)
    (span,) = flush_spans(exporter, "traced")
    assert span.attributes is not None
    assert span.attributes["rows"] == 3
    assert span.attributes["attempt"] == 1
    assert span.attributes["outcome"] == "persisted"
    assert span.status.status_code is StatusCode.UNSET


def test_a_retried_flush_counts_its_attempts(
    exporter: InMemorySpanExporter, sink: FakeSink
) -> None:
    sink.failures.extend([psycopg.OperationalError("connection lost")] * 2)
    with fast_queue(sink, "retried") as wb:
        wb.put({"id": 1, "value": "v"})
        assert wb.flush(timeout=10)
    (span,) = flush_spans(exporter, "retried")
    assert span.attributes is not None
    assert (span.attributes["attempt"], span.attributes["outcome"]) == (3, "persisted")


def test_rows_given_up_make_an_error_span(exporter: InMemorySpanExporter, sink: FakeSink) -> None:
    with fast_queue(sink, "partial") as wb:
        wb.put({"id": 1, "value": "v"})
        wb.put({"id": 2, "value": POISON})
        assert wb.flush(timeout=10)
        wb.put({"id": 3, "value": POISON})
        assert wb.flush(timeout=10)
    partial, failed = flush_spans(exporter, "partial")
    assert partial.attributes is not None and failed.attributes is not None
    assert (partial.attributes["outcome"], partial.attributes["failed"]) == ("partial", 1)
    assert (failed.attributes["outcome"], failed.attributes["failed"]) == ("failed", 1)
    assert partial.status.status_code is StatusCode.ERROR
    assert "CheckViolation" in (partial.status.description or "")


def test_without_opentelemetry_a_queue_works_untraced() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from tests.fakes import FakeSink\n"
        "from writebehind import WriteBehindQueue\n"
        "from writebehind.queue.tracing import FlushTracer\n"
        "assert FlushTracer('q')._tracer is None\n"
        "sink = FakeSink()\n"
        "with WriteBehindQueue(sink, registry=None) as wb:\n"
        "    wb.put({'id': 1, 'value': 'v'})\n"
        "assert sink.table == {1: 'v'}, sink.table\n"
        "print('untraced ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "untraced ok" in result.stdout
