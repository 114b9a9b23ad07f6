"""SQLAlchemy: a ``Table``, or a mapped class (declarative, imperative, Flask-SQLAlchemy's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import instance_state

from ._model import ModelTable, NoDefault

__all__ = ["describe"]


def describe(value: object) -> ModelTable | None:
    """The model of a SQLAlchemy Table or mapped class; None for anything else."""
    if isinstance(value, sqlalchemy.Table):
        return _of_table(value, None, value.fullname)
    if not isinstance(value, type):
        return None
    mapper: Any = sqlalchemy.inspect(value, raiseerr=False)
    if not isinstance(mapper, Mapper):
        return None
    table = mapper.local_table
    if not isinstance(table, sqlalchemy.Table):
        raise TypeError(
            f"the mapped class {value.__qualname__} is mapped to {table!r}, not to one table"
        )
    return _of_table(table, value, f"{value.__module__}.{value.__qualname__}")


def _of_table(table: sqlalchemy.Table, model: type | None, name: str) -> ModelTable:
    defaults: dict[str, Callable[[], Any]] = {}
    generated = set()
    for column in table.columns:
        if column.server_default is not None or column.identity is not None:
            generated.add(column.name)
        default = column.default
        if default is None:
            continue
        if getattr(default, "is_sequence", False):
            generated.add(column.name)
        elif getattr(default, "is_scalar", False):
            defaults[column.name] = _constant(default.arg)  # type: ignore[attr-defined]
        elif getattr(default, "is_callable", False):
            defaults[column.name] = _called(column.name, default.arg)  # type: ignore[attr-defined]
        else:  # a SQL expression: only SQLAlchemy's own INSERT evaluates it
            defaults[column.name] = _sql_default(column.name)
    autoincrement = table.autoincrement_column
    if autoincrement is not None:
        generated.add(autoincrement.name)
    return ModelTable(
        name=name,
        table=table.name,
        schema=table.schema,
        primary_key=tuple(column.name for column in table.primary_key.columns),
        model=model,
        values=_values_of(table) if model is not None else _no_instances,
        defaults=defaults,
        generated=frozenset(generated),
        assign=_assign_to(table),
    )


def _values_of(table: sqlalchemy.Table) -> Callable[[Any], dict[str, Any]]:
    # (attribute, column name) of the table's columns, per mapped class (a subclass of an
    # inheritance hierarchy has a mapper of its own), found once.
    pairs_of: dict[type, tuple[tuple[str, str], ...]] = {}

    def pairs(kind: type) -> tuple[tuple[str, str], ...]:
        found = pairs_of.get(kind)
        if found is None:
            mapper: Any = sqlalchemy.inspect(kind)
            found = pairs_of[kind] = tuple(
                (attribute.key, column.name)
                for attribute in mapper.column_attrs
                for column in attribute.columns
                if isinstance(column, sqlalchemy.Column) and column.table is table
            )
        return found

    def values(instance: Any) -> dict[str, Any]:
        given = instance_state(instance).dict  # never set: its default, or the database's
        return {column: given[key] for key, column in pairs(type(instance)) if key in given}

    return values


def _assign_to(table: sqlalchemy.Table) -> Callable[[Any, Mapping[str, Any]], None]:
    def assign(instance: Any, values: Mapping[str, Any]) -> None:
        for attribute in sqlalchemy.inspect(instance).mapper.column_attrs:
            for column in attribute.columns:
                if column.table is table and column.name in values:
                    setattr(instance, attribute.key, values[column.name])

    return assign


def _no_instances(_value: Any) -> dict[str, Any]:  # pragma: no cover - is_instance is False
    raise TypeError("a Table has no instances")


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


class _NoContext:
    """What a default that reads SQLAlchemy's execution context is given: there is none."""

    def __init__(self, column: str) -> None:
        self._column = column

    def __getattr__(self, name: str) -> Any:
        raise NoDefault(
            f"the default of column {self._column!r} reads SQLAlchemy's execution context, "
            "which a write-behind row does not have: give the column a value"
        )


def _called(column: str, function: Callable[[Any], Any]) -> Callable[[], Any]:
    # SQLAlchemy wraps a default taking no argument into one taking the context.
    return lambda: function(_NoContext(column))


def _sql_default(column: str) -> Callable[[], Any]:
    def refuse() -> Any:
        raise NoDefault(
            f"the default of column {column!r} is a SQL expression, which only SQLAlchemy's "
            "own INSERT evaluates: give the column a value, or make it a server_default"
        )

    return refuse
