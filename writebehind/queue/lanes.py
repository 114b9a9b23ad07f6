"""The lanes of a RowBuffer and the counts it keeps under its one lock, which its producers'
side (``putting``) and its writers' side (``taking``) share."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from .batch import Entry

__all__ = ["INTAKE", "REPLAY", "BufferState", "Combine", "Lane", "entry_of"]

INTAKE = -1
"""The lane of rows accepted before their key was known (the sink not open yet)."""
REPLAY = -2
"""The lane of rows replayed from the journals of dead processes: written before any other."""

Combine = Callable[[Entry, Entry], Entry]


class Lane:
    """The rows waiting for one writer, in put order."""

    __slots__ = ("flush_upto", "not_empty", "put_count", "rows", "taken_count", "waiting")

    def __init__(self, mutex: threading.Lock) -> None:
        self.rows: deque[Any] = deque()  # Entry, or a one-item list holding one (coalescing)
        self.not_empty = threading.Condition(mutex)
        self.put_count = 0  # accepted rows, replaced ones included
        self.taken_count = 0
        self.flush_upto = 0
        self.waiting: dict[Hashable, list[Entry]] = {}  # key -> its waiting cell (coalescing)


class BufferState:
    """What a RowBuffer holds: its lanes, and the counts and conditions of its one lock (see
    RowBuffer)."""

    def __init__(
        self, maxsize: int, batch_size: int, lanes: int = 1, combine: Combine | None = None
    ) -> None:
        self.maxsize = maxsize
        self.batch_size = min(batch_size, maxsize)
        self.mutex = threading.Lock()
        self.not_full = threading.Condition(self.mutex)
        self.lanes = [Lane(self.mutex) for _ in range(lanes)]
        self.intake = Lane(self.mutex)
        self.intake_held = 0  # intake rows taken and not yet settled: the lanes wait for them
        self.replay = Lane(self.mutex)
        self.replay_held = 0  # the same for replayed rows: every other lane waits for them
        self.replaying = False  # rows are still being read from dead processes' journals
        self.replay_taken = threading.Condition(self.mutex)
        self.combine = combine
        self.count = 0  # rows (or cells) waiting in every lane
        self.owner: Callable[[], object] = lambda: None
        """The queue, weakly: held strongly (``_keep``) while rows are in, so that a queue
        dropped with rows waiting lives until they are written."""
        self._keep: object = None
        self.held = 0
        self.put_count = 0
        self.closed = False
        self.deletes = False
        """Whether a delete was ever taken in: batches may then hold deletes (the Delivery
        looks for them only then)."""

    def lane_of(self, key: Hashable, params: tuple[Any, ...]) -> Lane:
        """The lane of a row: the intake while its key is unknown, else its key's."""
        if not params:
            return self.intake
        lanes = self.lanes
        if len(lanes) == 1:
            return lanes[0]
        return lanes[hash(key) % len(lanes)]


def entry_of(item: Any) -> Entry:
    """The entry of a lane's ``item``: a lane holds entries, or (coalescing) one-item cells
    holding one."""
    return item[0] if isinstance(item, list) else item  # type: ignore[no-any-return]
