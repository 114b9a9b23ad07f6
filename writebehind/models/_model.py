"""What a sink takes from a model: one shape for every ORM."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InstanceRow", "ModelTable", "NoDefault", "foreign_instance", "settle"]


class NoDefault(Exception):
    """A column's default cannot be made in Python (a SQL expression): the message says what
    to do."""


@dataclass(frozen=True)
class ModelTable:
    """A table as a model describes it.

    ``values(instance)`` gives the column values an instance has set (unset ones left out);
    ``defaults`` the Python-side default of each column that has one, as a function making the
    value (a fresh one per row for a callable default, an aware now for ``auto_now``);
    ``generated`` the columns the database fills (identity, serial, server defaults).
    """

    name: str
    """What to call the model in messages: ``module.Class`` or the table's name."""
    table: str
    schema: str | None
    primary_key: tuple[str, ...]
    model: type | None
    """The class whose instances are rows (None for a bare SQLAlchemy Table)."""
    columns: tuple[str, ...]
    """Every column of the model's table, in its order."""
    values: Callable[[Any], dict[str, Any]]
    defaults: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    generated: frozenset[str] = frozenset()
    assign: Callable[[Any, Mapping[str, Any]], None] = lambda _instance, _values: None
    """Sets the values of defaults made for an instance on it, as the ORM's save() does (a
    uuid4 key made at put() is then the instance's own)."""
    unloaded: Callable[[Any], frozenset[str]] = lambda _instance: frozenset()
    """The columns an instance read from the database has not loaded (deferred, or expired by
    a commit): unknown, not unset."""
    nullable: frozenset[str] = frozenset()
    """Columns a new instance may leave unset: NULL, as the ORM's INSERT writes them."""
    refreshed: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    """Columns every save() of an instance sets anew (Django's ``auto_now``)."""

    def is_instance(self, value: object) -> bool:
        """Whether ``value`` is a row of this model (an instance of it or of a subclass)."""
        return self.model is not None and isinstance(value, self.model)

    def row_of(self, value: object) -> dict[str, Any]:
        """The row an instance stands for: its set columns; TypeError for anything else."""
        if self.is_instance(value):
            return self.values(value)
        if self.model is None:
            raise TypeError(
                f"a row for {self.name} must be a Mapping of column -> value, "
                f"got {type(value).__name__}"
            )
        raise TypeError(
            f"a row for {self.name} must be a Mapping of column -> value or an instance of "
            f"{self.model.__qualname__}, got {_named(value)}"
        )


class InstanceRow(dict[str, Any]):
    """The row of an instance, and the defaults made for it (``made``): set on the instance
    once the row is accepted (settle()), so that a put() that fails changes nothing."""

    __slots__ = ("_instance", "_model", "made")

    def __init__(self, model: ModelTable, instance: Any) -> None:
        super().__init__()
        self._model, self._instance = model, instance
        self.made: dict[str, Any] = {}

    def settle(self) -> None:
        """Set the defaults made for the instance on it (once)."""
        made, self.made = self.made, {}
        if made:
            self._model.assign(self._instance, made)


def settle(row: object) -> None:
    """After a row was accepted: an instance's made defaults set on it."""
    if type(row) is InstanceRow:
        row.settle()


def foreign_instance(value: object) -> str | None:
    """How to name ``value`` if it is an instance of an ORM model (SQLAlchemy's or Django's),
    else None: no key value of a column."""
    if hasattr(value, "_sa_instance_state") or (
        hasattr(value, "_meta") and hasattr(value, "_state") and hasattr(value, "pk")
    ):
        return _named(value)
    return None


def _named(value: object) -> str:
    kind = type(value)
    return f"an instance of {kind.__module__}.{kind.__qualname__}"
