"""How rows of one key combine inside a batch, as the statement combines a row with the one in
the table: ``merge`` sums or keeps extremes, a version keeps the highest, DO NOTHING the first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._sink import Params, Replaces

__all__ = ["ADDABLE", "RowMerger", "keep_first"]


ADDABLE = frozenset(
    {"smallint", "integer", "bigint", "numeric", "real", "double precision", "money", "interval"}
)
"""Column types ``merge={...: "add"}`` may sum."""


class RowMerger:
    """Combines rows of one key as the statement combines them with the existing row: ``add``
    sums, ``max`` and ``min`` keep the greatest or least; a None is no value. A column the
    update does not set keeps the first row's value (the one an INSERT of it would leave);
    the other columns take the value put last, or, given ``replaces``, the newer row's only
    where that rule says it replaces the one kept (a higher version)."""

    def __init__(
        self,
        names: Sequence[str],
        merge: Mapping[str, str],
        not_updated: Sequence[str] = (),
        replaces: Replaces | None = None,
    ) -> None:
        self._names = tuple(names)
        combine = {"add": _add, "max": _greatest, "min": _least}
        self._merged = tuple(
            (index, combine[merge[name]]) for index, name in enumerate(names) if name in merge
        )
        self._first = tuple(index for index, name in enumerate(names) if name in not_updated)
        self._replaces = replaces

    def merge(self, kept: Params, newer: Params) -> Params:
        if self._replaces is not None and not self._replaces(kept, newer):
            return kept
        values = list(newer)
        for index in self._first:
            values[index] = kept[index]
        for index, combine in self._merged:
            values[index] = combine(kept[index], newer[index])
        return tuple(values)

    def row_of(self, params: Params) -> Mapping[str, Any]:
        return dict(zip(self._names, params, strict=True))


def _add(kept: Any, newer: Any) -> Any:
    return newer if kept is None else kept if newer is None else kept + newer


def _greatest(kept: Any, newer: Any) -> Any:
    return newer if kept is None else kept if newer is None else max(kept, newer)


def _least(kept: Any, newer: Any) -> Any:
    return newer if kept is None else kept if newer is None else min(kept, newer)


def keep_first(_kept: Params, _row: Params) -> bool:
    return False
