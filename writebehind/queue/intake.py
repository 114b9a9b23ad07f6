"""The intake: put(), put_many() and the deletes, from the row as given to the entries in the
buffer (checked and converted by the sink, or unchecked while it cannot open; journaled first
when the queue keeps a journal)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from .._sink import Deletion, Params, Sink
from ..errors import QueueClosed, SchemaError
from ..journal.keeper import QueueJournal, encode_record
from ..models._model import InstanceRow, settle
from .batch import Entry, new_entry
from .buffer import RowBuffer
from .metrics import QueueStats
from .opening import SinkOpener

__all__ = ["UNCHECKED", "UNCHECKED_DELETE", "Intake"]

UNCHECKED: Params = ()
"""The params of a row accepted before the sink could read the catalog: checked later."""
UNCHECKED_DELETE: Params = Deletion(())
"""The same for a delete."""


class Intake:
    """Takes rows and deletes into one queue's buffer, as its put methods promise. It holds the
    queue's parts, never the queue: a queue nobody references is freed at once."""

    def __init__(
        self,
        sink: Sink,
        *,
        name: str,
        buffer: RowBuffer,
        opener: SinkOpener,
        stats: QueueStats,
        clock: Callable[[], float],
        own_threads: set[int],
        first_open_wait: float,
    ) -> None:
        self._sink = sink
        self._prepare = sink.prepare
        self._as_row: Callable[[Any], Mapping[str, Any]] | None = getattr(sink, "as_row", None)
        self.name = name
        self._buffer = buffer
        self._opener = opener
        self._stats = stats
        self._clock = clock
        self._own_threads = own_threads  # writers and the on_failure thread: never wait there
        self._first_open_wait = first_open_wait
        self.journal: QueueJournal | None = None
        """The journal every row is recorded in before it is accepted (None: none)."""
        self._layout_number = 0  # the journal's number for the sink's layout, once known

    def put(self, row: Mapping[str, Any] | Any, block: bool, timeout: float | None) -> None:
        """WriteBehindQueue.put(), once the writers run."""
        if type(row) is not dict and self._as_row is not None and not isinstance(row, Mapping):
            row = self._instance_row(row, block, timeout)  # a model instance
        if not self._opener.opened:
            key, params = self._put_unopened(row, block, timeout)
        else:
            key, params = self._prepare(row)
        buffer = self._buffer
        entry = new_entry((key, params, row, self._clock(), 1, (), None, 0))
        journal = self.journal
        if journal is not None:
            if threading.get_ident() in self._own_threads:
                self._put_recorded([entry], block, timeout)
            else:
                lane = buffer.lane_index(entry)
                layout = self._layout_number or self._number_layout(journal, params)
                payload = encode_record(lane, key, params, row, layout)
                size = len(payload)
                buffer.put_recorded_one(
                    entry,
                    payload,
                    lane,
                    journal.record_one,
                    lambda seconds: journal.wait_room(size, seconds),
                    block,
                    timeout,
                )
                if journal.options.sync == "always":
                    journal.sync()
        elif threading.get_ident() in self._own_threads:
            buffer.put_now([entry])  # room is only ever freed by the writers: never wait for it
        else:
            buffer.put(entry, block, timeout)
        if type(row) is InstanceRow:
            row.settle()  # accepted: the defaults made for an instance are set on it
        if buffer.put_count % QueueStats.SYNC_EVERY == 0:
            self._stats.sync()

    def put_many(self, rows: list[Any], block: bool, timeout: float | None) -> None:
        """WriteBehindQueue.put_many(), once the writers run."""
        as_row = self._as_row

        def to_row(row: Any) -> Mapping[str, Any]:
            if as_row is None or isinstance(row, Mapping):
                return row  # type: ignore[no-any-return]
            return self._instance_row(row, block, timeout)

        entries = self._entries(rows, to_row, False, block, timeout, "row")
        self._accept_all(entries, block, timeout)
        for entry in entries:
            settle(entry.row)

    def check_deletes(self) -> Callable[[Any], Mapping[str, Any]]:
        """The sink's key_row, which makes a key the Mapping of its columns; TypeError if the
        sink cannot delete."""
        key_row: Callable[[Any], Mapping[str, Any]] | None = getattr(self._sink, "key_row", None)
        if key_row is None or not hasattr(self._sink, "prepare_delete"):
            raise TypeError(f"the sink of queue {self.name!r} cannot delete")
        return key_row

    def delete(
        self,
        keys: list[Any],
        key_row: Callable[[Any], Mapping[str, Any]],
        block: bool,
        timeout: float | None,
        many: bool,
    ) -> None:
        """WriteBehindQueue.delete() and delete_many(), once the writers run; ``key_row``: what
        check_deletes() returned."""
        entries = self._entries(keys, key_row, True, block, timeout, "key" if many else None)
        self._buffer.deletes = True
        self._accept_all(entries, block, timeout)

    def prepare_delete(self, row: Mapping[str, Any]) -> tuple[Any, Params]:
        """The sink's key and params of a delete (TypeError, ValueError if it does not fit)."""
        return self._sink.prepare_delete(row)  # type: ignore[attr-defined,no-any-return]

    def _put_recorded(self, entries: list[Entry], block: bool, timeout: float | None) -> None:
        """Accept ``entries`` once their records are in the journal (and on disk, for
        ``sync="always"``)."""
        journal = self.journal
        assert journal is not None
        buffer = self._buffer
        converted = next((entry.params for entry in entries if entry.params), ())
        layout = self._layout_number or self._number_layout(journal, converted)
        payloads = [
            encode_record(buffer.lane_index(e), e.key, e.params, e.row, layout) for e in entries
        ]
        size = sum(map(len, payloads))
        buffer.put_recorded(
            entries,
            payloads,
            journal.record,
            lambda seconds: journal.wait_room(size, seconds),
            block,
            timeout,
            beyond_maxsize=threading.get_ident() in self._own_threads,
        )
        if journal.options.sync == "always":
            journal.sync()

    def _number_layout(self, journal: QueueJournal, params: Params) -> int:
        """The journal's number for the layout of converted rows' params (0: rows not
        converted yet, or a sink that says no layout), kept once known."""
        if not params:
            return 0
        layout = getattr(self._sink, "layout", None)
        if layout is None:
            return 0
        number = self._layout_number = journal.layout_number(layout)
        return number

    def _entries(
        self,
        values: list[Any],
        to_row: Callable[[Any], Mapping[str, Any]],
        deleting: bool,
        block: bool,
        timeout: float | None,
        label: str | None,
    ) -> list[Entry]:
        """The entries of ``values`` made rows by ``to_row`` and checked, as put() checks a
        row (or a delete); the error names the index of the first that does not fit, as the
        ``label`` (None: not named)."""
        entries = []
        for index, value in enumerate(values):
            try:
                row = to_row(value)
                if not self._opener.opened:
                    key, params = self._put_unopened(row, block, timeout, deleting)
                elif deleting:
                    key, params = self.prepare_delete(row)
                else:
                    key, params = self._prepare(row)
            except SchemaError:
                raise
            except (TypeError, ValueError) as error:
                if label is None:
                    raise
                raise type(error)(f"{label} {index}: {error}") from None
            entry = (key, params, row, self._clock(), 1, (), None, int(deleting))
            entries.append(new_entry(entry))
        return entries

    def _wait_first_open(self, block: bool, timeout: float | None) -> None:
        """Before the sink opened: wait for its first attempt to (within ``timeout``)."""
        if self._buffer.closed:
            raise QueueClosed(f"queue {self.name!r} is closed")
        opener = self._opener
        if not opener.attempts:
            wait = self._first_open_wait if block else 0.0
            opener.wait_first(wait if timeout is None else min(wait, timeout))

    def _instance_row(self, row: Any, block: bool, timeout: float | None) -> Mapping[str, Any]:
        """A model instance as the Mapping of its columns, its defaults made (they are set on
        the instance once its row is accepted), after the first attempt to open the sink, so
        that the columns it writes are known."""
        assert self._as_row is not None
        if not self._opener.opened:
            self._wait_first_open(block, timeout)
        return self._as_row(row)

    def _put_unopened(
        self,
        row: Mapping[str, Any],
        block: bool,
        timeout: float | None,
        deleting: bool = False,
    ) -> tuple[Any, Params]:
        opener = self._opener
        self._wait_first_open(block, timeout)
        if opener.opened:
            return self.prepare_delete(row) if deleting else self._prepare(row)
        error = opener.error
        if error is not None and opener.configuration_error:
            opener.want()
            self._buffer.wake()
            raise error.with_traceback(None)
        if not isinstance(row, Mapping):
            raise TypeError(f"row must be a Mapping of column -> value, got {type(row).__name__}")
        return None, UNCHECKED_DELETE if deleting else UNCHECKED

    def _accept_all(self, entries: list[Entry], block: bool, timeout: float | None) -> None:
        """Take ``entries`` in at once (journaled first, if there is a journal)."""
        if self.journal is not None:
            self._put_recorded(entries, block, timeout)
        elif threading.get_ident() in self._own_threads:
            self._buffer.put_now(entries)
        else:
            self._buffer.put_all(entries, block, timeout)
        self._stats.sync()
