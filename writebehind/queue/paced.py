"""The rows of one write, telling how far the sink has read into them: a producer waiting for
room is let in while the worker still waits on the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload

from .._sink import Params

__all__ = ["PacedRows", "ReadProgress"]

# Rows the sink reads between two progress reports: small enough that a producer let in by one
# report fits its turn into the worker's next wait on the server.
_PROGRESS_STEP = 32

ReadProgress = Callable[[int], None]
"""Told how many rows of the current write the sink has read so far."""


class PacedRows(Sequence[Params]):
    """The rows of one write; iterating them reports progress every few rows."""

    __slots__ = ("_on_read", "_rows")

    def __init__(self, rows: list[Params], on_read: ReadProgress) -> None:
        self._rows = rows
        self._on_read = on_read

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Params: ...

    @overload
    def __getitem__(self, index: slice) -> list[Params]: ...

    def __getitem__(self, index: int | slice) -> Params | list[Params]:
        return self._rows[index]

    def __iter__(self) -> Iterator[Params]:
        rows, on_read = self._rows, self._on_read
        for start in range(0, len(rows), _PROGRESS_STEP):
            yield from rows[start : start + _PROGRESS_STEP]
            on_read(min(start + _PROGRESS_STEP, len(rows)))
