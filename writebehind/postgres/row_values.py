"""What callers hand a sink, as the Mapping rows it checks: an instance of its model as its
columns, a key given to a delete as the key columns."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from .._sink import Params
from ..models import ModelTable
from ..models._model import foreign_instance
from ..models._rows import ModelRows

__all__ = ["key_row", "unopened", "unopened_rows"]


def unopened_rows(
    model: ModelTable, key: tuple[str, ...], columns: Sequence[str] | None
) -> ModelRows:
    """A model's rows before its sink opens, by the columns the model says it writes:
    ``columns`` and the key, or every column the database does not fill."""
    written = (
        (*key, *(c for c in columns if c not in key))
        if columns is not None
        else tuple(c for c in model.columns if c in key or c not in model.generated)
    )
    return ModelRows(model, written, key)


def key_row(
    table: str,
    names: tuple[str, ...],
    model: ModelTable | None,
    version_column: str | None,
    key: Any,
) -> dict[str, Any]:
    """The Mapping of the key columns ``names`` of ``table`` that ``key`` names (see
    PostgresUpsert.key_row)."""
    if not names:
        raise TypeError(
            f"{table!r} is written append-only (key=None): there is no key to delete by"
        )
    if isinstance(key, Mapping):
        return dict(key)
    if model is not None and model.is_instance(key):
        values = model.row_of(key)
        unset = [name for name in names if name not in values]
        if unset:
            raise ValueError(
                f"this {model.name} has no key to delete by: {', '.join(map(repr, unset))} not set"
            )
        wanted = (*names, *filter(None, [version_column]))
        return {name: values[name] for name in wanted if name in values}
    foreign = foreign_instance(key)
    if foreign is not None:
        accepted = f"an instance of {model.name}, " if model is not None else ""
        raise TypeError(
            f"a delete from {table!r} takes {accepted}a key value, a tuple or a "
            f"Mapping of the key columns, got {foreign}"
        )
    if len(names) == 1:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        return {names[0]: key}
    if not isinstance(key, tuple) or len(key) != len(names):
        raise ValueError(
            f"the key of {table!r} has {len(names)} columns {list(names)}: give a "
            f"tuple of {len(names)} values or a Mapping, got {key!r}"
        )
    return dict(zip(names, key, strict=True))


def unopened(row: Mapping[str, Any]) -> tuple[Hashable, Params]:
    """A sink's prepare() before it opens: TypeError for what is no Mapping, else ValueError."""
    if not isinstance(row, Mapping):
        raise TypeError(f"row must be a Mapping of column -> value, got {type(row).__name__}")
    raise ValueError("the sink is not open; call open() (the queue does at its first put)")
