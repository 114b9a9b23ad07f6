"""Running ``on_failure`` on a thread of its own, so that a slow or hung callback never holds a
writer (nor the exit past its deadline)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .delivery import describe
from .log_text import shortened, unchecked_key

__all__ = ["FailureCallbacks"]

logger = logging.getLogger("writebehind")

# An idle callback thread ends after this long (and starts again on the next failure), so that a
# queue nobody references leaves no thread behind.
_IDLE_END = 5.0

Callback = Callable[[list[Mapping[str, Any]], BaseException], None]


class FailureCallbacks:
    """Calls ``callback(rows, error)`` for each hand-over, one at a time, in the order handed.

    ``handed`` and ``done`` count hand-overs; ``wait(upto)`` waits until the first ``upto``
    have returned. ``threads`` is the set the thread adds its ident to (the queue's own
    threads), so that a put() from the callback is recognised as one from inside the queue.
    A callback that raises, anything, is logged, and the next one is called.
    """

    def __init__(
        self,
        name: str,
        callback: Callback,
        threads: set[int],
        clock: Callable[[], float] = time.monotonic,
        key_columns: tuple[str, ...] = (),
    ) -> None:
        self._name = name
        self._key_columns = key_columns  # what the log names a row by: its key, no other value
        self._callback = callback
        self._threads = threads
        self._clock = clock
        # Each call's rows, error, and the rows' keys (None: not checked yet), for the log.
        self._items: deque[tuple[list[Mapping[str, Any]], BaseException, list[Any]]] = deque()
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self.handed = 0
        self.done = 0
        self.running_since: float | None = None
        """When the callback under way was called, by ``clock`` (None: none is running)."""

    def hand(
        self, rows: list[Mapping[str, Any]], error: BaseException, keys: list[Any] | None = None
    ) -> None:
        """Queue one call; returns at once. ``keys``: the rows' keys, for the log that names
        the rows never handed over (None for a row not checked yet)."""
        with self._changed:
            self._items.append((rows, error, keys or [None] * len(rows)))
            self.handed += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"writebehind-{self._name}-on_failure", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def pending(self) -> int:
        """Calls handed over that have not returned."""
        with self._changed:
            return self.handed - self.done

    def log_undelivered(self) -> None:
        """At the end of the process: log, at ERROR, every row whose on_failure call has not
        been made (a call before it did not return), so that none ends unreported."""
        with self._changed:
            items = list(self._items)
        for rows, error, keys in items:
            logger.error(
                "queue %s: on_failure never received %d rows (%s), an earlier call had not "
                "returned when the process ended: %s",
                self._name,
                len(rows),
                describe(error),
                ", ".join(
                    unchecked_key(row, self._key_columns) if key is None else shortened(repr(key))
                    for row, key in zip(rows, keys, strict=True)
                ),
            )

    def wait(self, upto: int, timeout: float | None) -> bool:
        """Wait at most ``timeout`` seconds until the first ``upto`` calls have returned."""
        with self._changed:
            return self._changed.wait_for(lambda: self.done >= upto, timeout)

    def _run(self) -> None:
        ident = threading.get_ident()
        self._threads.add(ident)
        try:
            while True:
                with self._changed:
                    if not self._items and not self._changed.wait_for(
                        lambda: bool(self._items), _IDLE_END
                    ):
                        self._thread = None  # ends; the next hand() starts another
                        return
                    rows, error, _keys = self._items.popleft()
                    self.running_since = self._clock()
                try:
                    self._callback(rows, error)
                except BaseException:  # a SystemExit there must not end the calls behind it
                    logger.exception("queue %s: on_failure raised", self._name)
                finally:
                    with self._changed:
                        self.done += 1
                        self.running_since = None
                        self._changed.notify_all()
        finally:
            self._threads.discard(ident)
