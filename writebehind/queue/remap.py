"""Journal records read back, made rows of the sink as it is now: each value goes to the column
of its name, whatever the replaying process's ``columns=`` or the table's column order.

A record says which layout (table, column names, types, key) its values follow. Rows of the
sink's own layout are taken as they are. Rows of another one are written by name: through the
sink if it writes the same columns, else through a target that writes those (the table's other
columns get their defaults, or NULL). Rows that cannot be written as the table is now (a column
it no longer has, a NOT NULL column they lack) are refused with a SchemaError naming the
column: handed to ``on_failure``, never written to another column, never retried.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from .._sink import Deletion, Params, RowLayout, Sink
from ..errors import SchemaError
from ..journal.keeper import Replayed
from .batch import Refused

__all__ = ["Remapper", "WrittenRow"]

Row = tuple[Hashable, Params, Mapping[str, Any], Any]
"""key, params, the row as on_failure gets it, and the target (None: the sink)."""


class Remapper:
    """Turns the records of one journal into rows for ``sink``; ``learn()`` its layouts as
    they are read (meta records come before the records that need them)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._own: RowLayout | None = getattr(sink, "layout", None)
        self._target_for = getattr(sink, "target_for", None)
        self._written = tuple(getattr(sink, "written_columns", ()))
        self._layouts: dict[int, RowLayout] = {}
        self._plans: dict[int, Any] = {}  # layout number -> None (as it is), a target, Refused
        self._by_names: dict[tuple[str, ...], Any] = {}

    def learn(self, number: int, layout: RowLayout) -> None:
        """Layout ``number`` of this journal is ``layout``."""
        if self._layouts.setdefault(number, layout) != layout:
            raise ValueError(f"journal layout {number} is given twice, differently")

    def row(self, record: Replayed) -> Row:
        """Key, params, on_failure's row and target of ``record``; ValueError for a record
        whose layout was never read (its meta record lost with damage)."""
        if record.deleted:
            return self._deleted(record.row or {})
        if record.row is not None:  # accepted before the sink could read its catalog
            return self._by_name(record.row)
        if not record.layout:  # a journal of 0.2, or a sink without a layout: by position
            mapping = WrittenRow(self._written, record.params)
            if self._written and len(self._written) != len(record.params):
                error = SchemaError(
                    f"a journaled row of {len(record.params)} values, without column names, "
                    f"cannot be written to the {len(self._written)} columns {list(self._written)}"
                )
                return record.key, record.params, mapping, Refused(error)
            return record.key, record.params, mapping, None
        layout = self._layouts.get(record.layout)
        if layout is None:
            raise ValueError(f"its layout ({record.layout}) is not in the journal")
        plan = self._plans.get(record.layout, _UNKNOWN)
        if plan is _UNKNOWN:
            plan = self._plans[record.layout] = self._plan(layout)
        mapping = WrittenRow(layout.columns, record.params)
        if plan is None:
            return record.key, record.params, mapping, None
        if isinstance(plan, Refused):
            return record.key, record.params, mapping, plan
        return self._prepared(plan, dict(mapping), record.key, record.params)

    def _deleted(self, row: Mapping[str, Any]) -> Row:
        """A delete, checked against the key as it is now: a SchemaError naming the column if
        the key changed (a column it has not, or lacks)."""
        prepare_delete = getattr(self._sink, "prepare_delete", None)
        if prepare_delete is None:
            error = SchemaError(f"a journaled delete of {dict(row)!r}: the sink cannot delete")
            return None, Deletion(()), row, Refused(error)
        try:
            key, params = prepare_delete(row)
        except (TypeError, ValueError) as error:
            return None, Deletion(()), row, Refused(SchemaError(f"a journaled delete: {error}"))
        return key, params, row, None

    def _plan(self, layout: RowLayout) -> Any:
        if layout == self._own:
            return None  # the same columns, in the same order, of the same types
        if self._target_for is None:  # a sink of the application's, without targets
            if layout.columns == self._written:
                return None
            return Refused(SchemaError(_no_targets(layout.columns, self._written)))
        try:
            return self._target_for(layout.columns)
        except SchemaError as error:
            return Refused(error)

    def _by_name(self, row: Mapping[str, Any]) -> Row:
        names = tuple(row)
        if self._target_for is None:
            return None, (), row, None  # checked by the writer, as put() would have
        target = self._by_names.get(names, _UNKNOWN)
        if target is _UNKNOWN:
            try:
                target = self._by_names[names] = self._target_for(names)
            except SchemaError as error:
                target = self._by_names[names] = Refused(error)
        if isinstance(target, Refused):
            return None, (), row, target
        return self._prepared(target, row, None, ())

    def _prepared(self, target: Any, row: Mapping[str, Any], key: Hashable, params: Params) -> Row:
        try:
            key, params = target.prepare(row)
        except (TypeError, ValueError) as error:  # the table's types changed, say
            return key, params, row, Refused(error)
        return key, params, row, None if target is self._sink else target


_UNKNOWN: Any = object()


def _no_targets(columns: tuple[str, ...], written: tuple[str, ...]) -> str:
    return (
        f"journaled rows of columns {list(columns)}: the sink writes {list(written)} and "
        "cannot write other columns"
    )


class WrittenRow(Mapping[str, Any]):
    """A replayed row as on_failure gets it: the columns it was journaled with and their values
    (converted, as the journal kept them), made into a mapping only when asked."""

    __slots__ = ("_columns", "_params")

    def __init__(self, columns: tuple[str, ...], params: Params) -> None:
        self._columns = columns
        self._params = params

    def _as_dict(self) -> dict[str, Any]:
        if len(self._columns) == len(self._params):
            return dict(zip(self._columns, self._params, strict=True))
        return {"params": self._params}

    def __getitem__(self, column: str) -> Any:
        return self._as_dict()[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._as_dict())

    def __len__(self) -> int:
        return len(self._as_dict())

    def __repr__(self) -> str:
        return repr(self._as_dict())
