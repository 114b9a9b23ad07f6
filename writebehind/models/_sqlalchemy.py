"""SQLAlchemy: a ``Table``, or a mapped class (declarative, imperative, Flask-SQLAlchemy's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy
from sqlalchemy.orm import MANYTOONE, Mapper
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.elements import ClauseElement

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
        columns=tuple(column.name for column in table.columns),
        values=_values_of(table) if model is not None else _no_instances,
        defaults=defaults,
        generated=frozenset(generated),
        assign=_assign_to(table),
        unloaded=_unloaded_of(table),
        nullable=frozenset(
            column.name
            for column in table.columns
            if column.nullable and column.default is None and column.name not in generated
        ),
    )


_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, bytes})
"""Value types that are no SQL expression, checked without a look at their attributes."""


def _identity(state: Any, column: Any) -> Any:
    """The value of a primary key ``column`` in a persistent object's identity key (the ORM
    keeps it when the attributes are expired), or _UNKNOWN."""
    if state.key is None:
        return _UNKNOWN
    for index, key_column in enumerate(state.mapper.primary_key):
        if key_column is column:
            return state.key[1][index]
    return _UNKNOWN


_UNKNOWN: Any = object()


class _Shape:
    """What the instances of one mapped class give of the table, found once: (attribute,
    column) of its columns, its primary key columns, and the many-to-one relationships whose
    foreign key columns a related object gives (a subclass of an inheritance hierarchy has a
    mapper of its own)."""

    def __init__(self, kind: type, table: sqlalchemy.Table) -> None:
        mapper: Any = sqlalchemy.inspect(kind)
        self.pairs = tuple(
            (attribute.key, column)
            for attribute in mapper.column_attrs
            for column in attribute.columns
            if isinstance(column, sqlalchemy.Column) and column.table is table
        )
        self.keys = tuple(column for column in mapper.primary_key if column.table is table)
        self.references = tuple(
            _Reference(
                relationship.key,
                tuple(
                    (local.name, relationship.mapper.get_property_by_column(remote).key, remote)
                    for local, remote in relationship.local_remote_pairs
                    if isinstance(local, sqlalchemy.Column) and local.table is table
                ),
            )
            for relationship in mapper.relationships
            if relationship.direction is MANYTOONE
        )


def _values_of(table: sqlalchemy.Table) -> Callable[[Any], dict[str, Any]]:
    shapes: dict[type, _Shape] = {}

    def values(instance: Any) -> dict[str, Any]:
        state = instance_state(instance)
        given = state.dict  # never set: its default, or the database's
        kind = type(instance)
        shape = shapes.get(kind) or shapes.setdefault(kind, _Shape(kind, table))
        row = {}
        for key, column in shape.pairs:
            if key in given:
                value = given[key]
                if type(value) not in _PLAIN and (
                    isinstance(value, ClauseElement) or hasattr(value, "__clause_element__")
                ):
                    raise TypeError(
                        f"column {column.name!r} holds a SQL expression ({value}), which only "
                        "SQLAlchemy's own flush evaluates: give it a value"
                    )
                row[column.name] = value
        if state.key is not None:  # persistent: an expired key is in the identity key
            for column in shape.keys:
                if column.name not in row:
                    row[column.name] = _identity(state, column)
        for reference in shape.references:
            if reference.attribute in given:
                reference.fill(row, given[reference.attribute])
        return row

    return values


class _Reference:
    """A many-to-one relationship: the foreign key columns it sets from the related object's
    key, as a flush would, where the instance does not set them itself."""

    def __init__(self, attribute: str, columns: tuple[tuple[str, str, Any], ...]) -> None:
        self.attribute = attribute
        self.columns = columns

    def fill(self, row: dict[str, Any], related: Any) -> None:
        state = None if related is None else instance_state(related)
        for column, remote, remote_column in self.columns:
            if column in row:
                continue
            if state is None:
                row[column] = None
                continue
            value = state.dict.get(remote, _UNKNOWN)
            if value is _UNKNOWN:
                value = _identity(state, remote_column)  # expired by a commit, say
            if value is _UNKNOWN:
                raise ValueError(
                    f"column {column!r} is unset and the relationship {self.attribute!r} holds "
                    f"an object whose {remote!r} is not known yet (not flushed): set "
                    f"{column!r} itself"
                )
            row[column] = value


def _unloaded_of(table: sqlalchemy.Table) -> Callable[[Any], frozenset[str]]:
    def unloaded(instance: Any) -> frozenset[str]:
        state = instance_state(instance)
        if state.key is None:  # new: nothing to load, what is unset is unset
            return frozenset()
        names = state.unloaded
        return frozenset(
            column.name
            for attribute in state.mapper.column_attrs
            if attribute.key in names
            for column in attribute.columns
            if isinstance(column, sqlalchemy.Column)
            and column.table is table
            and not column.primary_key  # the identity key has it
        )

    return unloaded


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
