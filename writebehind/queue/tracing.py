"""Optional OpenTelemetry tracing: each flush is a span ``writebehind.flush``.

Active when ``opentelemetry-api`` is importable (extra ``tracing``); the spans go wherever the
application's tracer provider sends them (nowhere without an SDK). Without the package, a flush
costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .delivery import Report, describe

try:
    from opentelemetry import trace as _trace
except ImportError:  # tracing is optional
    _trace = None  # type: ignore[assignment]

__all__ = ["SPAN_NAME", "FlushTracer"]

SPAN_NAME = "writebehind.flush"


class FlushTracer:
    """Wraps each flush of one queue in a span: attributes ``queue``, ``rows`` (taken from the
    queue), ``attempt`` (1 + retries) and ``outcome`` (``persisted``, ``partial``, ``failed``),
    plus ``failed`` (rows given up) and an error status when rows were given up."""

    def __init__(self, queue: str) -> None:
        self._queue = queue
        self._tracer: Any = None
        if _trace is not None:
            from .._version import __version__

            # A proxy until the application sets its provider, which it may do later.
            self._tracer = _trace.get_tracer("writebehind", __version__)

    def flush(self, rows: int, write: Callable[[], Report]) -> Report:
        """Run ``write`` (one batch's delivery) inside a span when tracing is available."""
        if self._tracer is None:
            return write()
        attributes = {"queue": self._queue, "rows": rows}
        with self._tracer.start_as_current_span(SPAN_NAME, attributes=attributes) as span:
            report = write()
            span.set_attribute("attempt", report.attempts)
            span.set_attribute("outcome", report.outcome)
            if report.failed:
                span.set_attribute("failed", report.failed)
                error = report.error
                status = _trace.StatusCode.ERROR
                span.set_status(status, describe(error) if error else None)
            return report
