"""Whether a queue is healthy, for readiness probes: its writers run, and none is stuck."""

from __future__ import annotations

from .buffer import RowBuffer
from .callbacks import FailureCallbacks
from .opening import SinkOpener
from .writers import Writer

__all__ = ["unhealthy_reason"]


def unhealthy_reason(
    *,
    now: float,
    closed: bool,
    started: bool,
    writers: list[Writer],
    stuck_after: float,
    opener: SinkOpener,
    buffer: RowBuffer,
    callbacks: FailureCallbacks | None,
) -> str | None:
    """Why the queue is not healthy (None: it is)."""
    if closed:
        return "closed"
    if not started:
        return None
    for writer in writers:
        thread = writer.thread
        if thread is None or not thread.is_alive():
            return f"writer {writer.index} is not running"
        busy_since = writer.busy_since
        if busy_since is not None and now - busy_since > stuck_after:
            return (
                f"writer {writer.index} has been delivering one batch for "
                f"{now - busy_since:.0f}s (stuck_after={stuck_after:g}s)"
            )
    if not opener.opened:
        oldest = buffer.oldest_waiting()
        if oldest is not None and now - oldest > stuck_after:
            return f"rows have waited {now - oldest:.0f}s for the sink to open"
    running_since = None if callbacks is None else callbacks.running_since
    if running_since is not None and now - running_since > stuck_after:
        return f"an on_failure call has been running for {now - running_since:.0f}s"
    return None
