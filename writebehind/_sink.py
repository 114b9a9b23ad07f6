"""The seam between when to write (the queue) and how to write (a sink)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

Params = tuple[Any, ...]
"""One row as the sink writes it: values in the sink's column order, converted at put()."""


class Deletion(tuple[Any, ...]):
    """The params of a delete, as a sink's ``prepare_delete`` makes them: the key's values in
    key order, then the version (with a ``version_column``). A batch given to ``write`` holds
    them beside the params of upserts; its keys are distinct."""

    __slots__ = ()


class RowLayout(NamedTuple):
    """What the parameters of a row mean, as plain data: the table (schema-qualified), the
    written columns in the order of the parameters, their types (the catalog's names), and
    the key columns. A journal keeps it with the rows, so that a process running other code
    (other ``columns=``, a migrated table) writes each value to the column it was put for."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: tuple[str, ...]


class Target(Protocol):
    """Where rows of one layout are written: a sink, or (``PostgresUpsert.target_for``) the
    same table written with other columns, for rows replayed from a journal."""

    @property
    def replaces(self) -> Any:
        """How a batch picks a key's row (see PostgresUpsert.replaces); None: the last put."""
        ...

    @property
    def merger(self) -> Any:
        """How a key's rows combine (see PostgresUpsert.merger); None: they do not."""
        ...

    def prepare(self, row: Mapping[str, Any]) -> tuple[Hashable, Params]:
        """Check and convert one row of these columns, as Sink.prepare does."""
        ...

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        """Write rows of these columns (distinct keys) in one transaction."""
        ...


class ProgressMark(NamedTuple):
    """How far a journal lane's records are applied, written by a sink in the transaction of a
    batch: every record of ``source`` with a sequence number up to ``applied_seq``, and those in
    ``applied_extra`` above it, is done.

    The write is conditional: it may commit only if the progress row holds ``expected`` (its
    ``(applied_seq, applied_extra)`` as last written, or None: no row yet) and belongs to
    ``owner`` (the instance writing it); otherwise the sink raises ProgressConflict and nothing
    of the write commits. That keeps a write still running for a process that died (blocked on
    a lock, say) from committing after another process replayed its rows.
    """

    source: str
    applied_seq: int
    applied_extra: tuple[int, ...]
    expected: tuple[int, tuple[int, ...]] | None
    owner: str


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
    without them is replayed at least once. A sink with ``key_row(key)`` (the Mapping of the
    key columns a delete names) and ``prepare_delete(row)`` (its key and ``Deletion`` params)
    takes deletes: its ``write`` then gets ``Deletion`` params among the rows. A sink with
    ``as_row(value)`` takes other objects than Mappings as rows (a model's instances).
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


Replaces = Callable[[Params, Params], bool]
"""``replaces(kept, newer)``: whether a newer row of a key takes the place of the one kept."""


class Merger(Protocol):
    """Combines the rows of one key into one, as the statement combines a row with the
    existing one (counts summed, the greatest or least of values)."""

    def merge(self, kept: Params, newer: Params) -> Params:
        """The params of ``kept`` and ``newer`` (put later) combined."""
        ...

    def row_of(self, params: Params) -> Mapping[str, Any]:
        """A row, as put() takes it, that stands for ``params``: what ``on_failure`` gets."""
        ...
