"""A sink's table written with other columns: the Target of rows replayed from a journal that
kept other ones (another ``columns=``, a table migrated since)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._sink import Params, ProgressMark
from .layout import Layout
from .methods import Writer

__all__ = ["Journaled", "WriteWith"]

WriteWith = Callable[[Writer, Sequence[Params], Sequence[ProgressMark]], None]
"""The sink's write of rows through a writer, in one transaction with their progress marks."""


class Journaled:
    """The sink's table written with other columns: rows replayed from a journal that kept
    other ones (a Target)."""

    def __init__(self, table: str, write_with: WriteWith, layout: Layout) -> None:
        self._table = table
        self._write_with = write_with
        self._layout = layout
        self.prepare = layout.prepare
        self.replaces = layout.replaces
        self.merger = layout.merger
        self.written_columns = layout.names

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        """Write rows of these columns as the sink's write() does."""
        self._write_with(self._layout.writer, rows, progress)

    def __repr__(self) -> str:
        return f"<{self._table!r} written as {list(self._layout.names)}>"
