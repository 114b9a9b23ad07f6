"""The seam between when to write (the queue) and how to write (a sink)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

Params = tuple[Any, ...]
"""One row as the sink writes it: values in the sink's column order, converted at put()."""

ProgressMark = tuple[str, int, tuple[int, ...]]
"""``(source, applied_seq, applied_extra)``: how far a journal's records are applied, written by
a sink in the transaction of a batch. ``source`` names one journal lane; every record of it with a
sequence number up to ``applied_seq``, and those in ``applied_extra`` above it, is done."""


@runtime_checkable
class Sink(Protocol):
    """Where a WriteBehindQueue writes its batches.

    The queue calls ``prepare`` from producer threads and ``write`` from its writer threads
    (with ``writers=N``, from N threads at once, each batch with keys of its own).

    Optional hooks the queue calls when a sink has them: ``expect_writers(n)`` before it opens
    (how many writes may run at once), ``interrupt()`` at the exit deadline (cancel the writes
    under way), ``after_fork()`` in a child forked after the sink opened (drop the parent's
    connections without closing them), and the attributes ``replaces`` and ``merger`` (how two
    rows of one key combine; see PostgresUpsert). With a journal: ``track_progress()`` before it
    opens; then, if the sink sets ``records_progress``, ``write(rows, progress=marks)`` records
    the marks (``ProgressMark``) in the write's transaction, ``read_progress(prefix)`` and
    ``forget_progress(prefix)`` read and delete them, and replay is exactly once. A sink
    without them is replayed at least once.
    """

    @property
    def name(self) -> str:
        """Default queue name (metrics label, thread name)."""
        ...

    def open(self) -> None:
        """Get ready to write: idempotent; raise here for a configuration the sink cannot use."""
        ...

    def prepare(self, row: Mapping[str, Any]) -> tuple[Hashable, Params]:
        """Validate and convert one row; return its key and its parameters.

        Raise TypeError or ValueError, naming the column, for a row the sink cannot write.
        """
        ...

    def write(self, rows: Sequence[Params]) -> None:
        """Write rows with distinct keys, all or none (one transaction)."""
        ...

    def close(self) -> None:
        """Release what ``open`` acquired: idempotent."""
        ...
