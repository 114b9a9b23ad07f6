"""``writebehind.Journal``: where and how a queue keeps the rows it accepted on local disk."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .segments import DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES, SyncMode

__all__ = ["Journal"]

_SYNC_MODES = ("process", "interval", "always")
_MIN_SEGMENT_BYTES = 4096


@dataclass(frozen=True)
class Journal:
    """A durable journal for a WriteBehindQueue: ``WriteBehindQueue(..., journal=Journal(path))``.

    With a journal, put() and put_many() return only once the rows are appended to segment files
    under ``path/<queue name>/<instance>/``, and a process that dies before writing them leaves
    them there for the next process of the same queue to replay. ``sync`` says what survives:

    - ``"process"`` (default): the rows are handed to the kernel (``os.write``) before put()
      returns; any kill of the process loses nothing, a power cut may lose the last moments.
    - ``"interval"``: as ``"process"``, and ``fdatasync`` at most every ``sync_interval``
      seconds in the background: a power cut loses at most about that interval.
    - ``"always"``: put() returns after an ``fdatasync`` that covers its rows (one call serves
      every producer waiting).

    ``max_bytes`` (1 GiB) bounds the segment files of one process; when they are full, or the
    disk is, put() waits for room as it waits on a full queue (``timeout``, ``put_nowait``
    raise QueueFull). Segments rotate at ``segment_bytes``: by default (None) a quarter of
    ``max_bytes``, at most 4 MiB, and the attribute then holds the size chosen; given, at least
    4096. ``max_bytes`` must be at least twice ``segment_bytes`` (8192 bytes at the least).
    Each process of the queue (gunicorn workers, forked children) keeps a journal of its own
    under ``path``; use one path for all of them, on a local disk that outlives the process.
    """

    path: str | os.PathLike[str]
    sync: SyncMode = "process"
    max_bytes: int = DEFAULT_MAX_BYTES
    sync_interval: float = 0.1
    segment_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, got {type(self.path).__name__}")
        if str(self.path) == "":
            raise ValueError("path must name a directory, got ''")
        if self.sync not in _SYNC_MODES:
            raise ValueError(f"sync must be one of {_SYNC_MODES}, got {self.sync!r}")
        for name in ("max_bytes", "segment_bytes"):
            value = getattr(self, name)
            if name == "segment_bytes" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int (bytes), got {type(value).__name__}")
        segment = self.segment_bytes
        if segment is None:
            # Small journals get small segments: rows are released a segment at a time.
            segment = min(DEFAULT_SEGMENT_BYTES, max(_MIN_SEGMENT_BYTES, self.max_bytes // 4))
            object.__setattr__(self, "segment_bytes", segment)
        elif segment < _MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be at least 4096, got {segment}")
        if self.max_bytes < 2 * segment:
            raise ValueError(
                f"max_bytes must be at least twice segment_bytes ({2 * segment}), "
                f"got {self.max_bytes}"
            )
        interval = self.sync_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"sync_interval must be seconds, got {type(interval).__name__}")
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"sync_interval must be a positive number of seconds, got {interval}")

    @property
    def root(self) -> Path:
        """``path`` as a Path."""
        return Path(self.path)

    @classmethod
    def of(cls, value: object) -> Journal | None:
        """What ``WriteBehindQueue(journal=...)`` takes: None, a path, or a Journal."""
        if value is None or isinstance(value, Journal):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(value)
        raise TypeError(
            "journal must be None, a directory path or a writebehind.Journal, "
            f"got {type(value).__name__}"
        )
