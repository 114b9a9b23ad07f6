"""The bounded queue between producers and the worker."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import QueueClosed, QueueFull

T = TypeVar("T")


class RowBuffer(queue.Queue[T]):
    """A ``queue.Queue`` that can be closed, numbers every put, and hands out whole batches.

    - ``put`` raises QueueClosed once the buffer is closed, also to producers blocked on a full
      buffer, so no row slips in behind the worker's last batch (Python 3.13's shutdown()).
    - ``put_count`` grows under the same lock as the insertion, so a flush that reads it knows
      exactly which items came before it: the flush barrier needs no marker in the queue.
    - The worker is woken only when a batch may have become due (first item, a full batch,
      flush, close), not on every put: each wake-up costs a lock round trip and a GIL switch.
    - Rows the worker has taken keep holding their room until it calls ``release``: the
      worker gives room back as the database consumes the rows, so that producers refill the
      queue in short turns while the worker waits on the server, rather than in one long turn
      that keeps the worker waiting for the GIL.
    - ``task_done``/``join`` are not used: the owner counts progress with ``taken_count``.
    """

    def __init__(self, maxsize: int, batch_size: int) -> None:
        super().__init__(maxsize)
        self.batch_size = min(batch_size, maxsize)
        self.put_count = 0
        self.taken_count = 0
        self.flush_upto = 0
        self.closed = False
        self.held = 0

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item``, waiting for room if ``block``. Raise QueueFull or QueueClosed."""
        with self.mutex:  # the conditions' lock; entered directly, it costs no Python call
            if self.closed:
                raise QueueClosed("the queue is closed")
            if len(self.queue) + self.held >= self.maxsize:
                if not block:
                    raise QueueFull(f"the queue is full ({self.maxsize} rows)")
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self.queue) + self.held >= self.maxsize:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise QueueFull(f"the queue stayed full ({self.maxsize} rows)")
                    self.not_full.wait(remaining)
                    if self.closed:
                        raise QueueClosed("the queue was closed while waiting for room")
            self.queue.append(item)
            self.put_count += 1
            size = len(self.queue)
            if size == 1 or size == self.batch_size:
                self.not_empty.notify()

    def put_all(self, items: list[T], block: bool = True, timeout: float | None = None) -> None:
        """Append every one of ``items`` at once, or none: wait for room for all of them if
        ``block`` (at most ``timeout`` seconds), else QueueFull; QueueClosed once closed.
        ValueError if they could never fit (more than ``maxsize``)."""
        count = len(items)
        if count > self.maxsize:
            raise ValueError(f"{count} rows can never fit in a queue of maxsize {self.maxsize}")
        with self.mutex:
            if self.closed:
                raise QueueClosed("the queue is closed")
            if len(self.queue) + self.held + count > self.maxsize:
                if not block:
                    raise QueueFull(f"no room for {count} rows ({self.maxsize} rows at most)")
                deadline = None if timeout is None else time.monotonic() + timeout
                while len(self.queue) + self.held + count > self.maxsize:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise QueueFull(f"no room for {count} rows ({self.maxsize} rows at most)")
                    self.not_full.wait(remaining)
                    if self.closed:
                        raise QueueClosed("the queue was closed while waiting for room")
            self._append_all(items)

    def put_now(self, items: list[T]) -> None:
        """Append ``items`` at once, even beyond ``maxsize`` (for the one thread that frees
        room, which must never wait for it). QueueClosed once closed."""
        with self.mutex:
            if self.closed:
                raise QueueClosed("the queue is closed")
            self._append_all(items)

    def _append_all(self, items: list[T]) -> None:
        # Under the mutex. Wakes the worker if the items make a batch, or are the first.
        before = len(self.queue)
        self.queue.extend(items)
        self.put_count += len(items)
        if before == 0 or before < self.batch_size <= len(self.queue):
            self.not_empty.notify()

    def wake(self) -> None:
        """Wake the worker to look at its state again."""
        with self.mutex:
            self.not_empty.notify_all()

    def wait_for_rows(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for an item, a close or a wake()."""
        with self.not_empty:
            if not self.queue and not self.closed:
                self.not_empty.wait(timeout)

    def take_now(self) -> list[T]:
        """Remove and return up to ``batch_size`` items at once, due or not."""
        with self.mutex:
            count = min(self.batch_size, len(self.queue))
            items = [self.queue.popleft() for _ in range(count)]
            self.taken_count += count
            self.held += count
            return items

    def close(self) -> None:
        """Refuse further puts and wake every waiter. Items already in stay to be taken."""
        with self.mutex:
            self.closed = True
            self.not_full.notify_all()
            self.not_empty.notify_all()

    def request_flush(self) -> int:
        """Make every item put so far due now; return how many items have been put so far."""
        with self.mutex:
            self.flush_upto = max(self.flush_upto, self.put_count)
            self.not_empty.notify_all()
            return self.put_count

    def take(self, age_wait: Callable[[T], float], idle_wait: float) -> list[T]:
        """Remove and return up to ``batch_size`` items once a batch is due; they keep their
        room until released.

        A batch is due when ``batch_size`` items wait, a flush or close asks for them, or
        ``age_wait(oldest item)`` (seconds the oldest may still wait) runs out. With nothing
        waiting, return an empty list at once if closed, else after ``idle_wait`` seconds at most.
        """
        with self.not_empty:
            if not self.queue:
                if self.closed:
                    return []
                self.not_empty.wait(idle_wait)
                if not self.queue:
                    return []
            while not (
                len(self.queue) >= self.batch_size
                or self.closed
                or self.flush_upto > self.taken_count
            ):
                wait = age_wait(self.queue[0])
                if wait <= 0:
                    break
                self.not_empty.wait(wait)
            count = min(self.batch_size, len(self.queue))
            popleft = self.queue.popleft
            items = [popleft() for _ in range(count)]
            self.taken_count += count
            self.held += count
            return items

    def release(self, count: int) -> None:
        """Give back the room of ``count`` taken items to producers."""
        with self.mutex:
            self.held -= count
            self.not_full.notify(count)
