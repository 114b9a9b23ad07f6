"""Waiting for a queue's rows to be written: flush()'s wait for the rows put before it, and
close()'s wait for the writers to end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .callbacks import FailureCallbacks
from .metrics import QueueStats
from .replay import Replay
from .writers import IDLE_WAIT, Writer

__all__ = ["join_writers", "wait_settled"]


def wait_settled(
    stats: QueueStats,
    targets: Sequence[int],
    alive: Callable[[], bool],
    callbacks: FailureCallbacks | None,
    deadline: float | None,
) -> bool:
    """Wait until each lane has settled ``targets`` rows, and the on_failure calls for those
    given up have returned; False if ``deadline`` (monotonic) passed or a writer is not
    running (``alive``)."""
    progress = stats.progress
    with progress:
        while any(done < target for done, target in zip(stats.settled, targets, strict=True)):
            if not alive():
                return False
            wait = IDLE_WAIT if deadline is None else min(IDLE_WAIT, deadline - time.monotonic())
            if wait <= 0:
                return False
            progress.wait(wait)
    if callbacks is None:
        return True
    # Those rows are settled; the on_failure calls for the ones given up are handed over.
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    return callbacks.wait(callbacks.handed, remaining)


def join_writers(
    writers: list[Writer],
    replay: Replay | None,
    callbacks: FailureCallbacks | None,
    timeout: float | None,
) -> bool:
    """Wait at most ``timeout`` seconds for every writer to end, and then for the
    ``on_failure`` calls they handed over to return; True if all have."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    for writer in writers:
        if writer.thread is not None:
            writer.thread.join(remaining())
    if any(w.thread is not None and w.thread.is_alive() for w in writers):
        return False
    if replay is not None and replay.thread is not None:
        replay.thread.join(remaining())  # it removes the replayed journals once done
    return callbacks is None or callbacks.wait(callbacks.handed, remaining())
