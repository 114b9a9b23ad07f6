"""The options of a PostgresUpsert, checked when it is built: TypeError or ValueError naming the
option, before anything connects."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg_pool import ConnectionPool

from ..models import KINDS, ModelTable
from .conninfo import conninfo_problem
from .methods import METHODS

__all__ = [
    "PRIMARY_KEY",
    "check_conflict_options",
    "check_conninfo_or_pool",
    "check_merge",
    "check_method",
    "check_name",
    "check_names",
    "check_pool_size",
    "check_timeout",
    "check_timezone",
    "table_schema_key",
]


class _PrimaryKey:
    def __repr__(self) -> str:
        return "PRIMARY_KEY"


PRIMARY_KEY: Any = _PrimaryKey()
"""``key``'s default: the primary key of a model or SQLAlchemy Table given as ``table``."""


def check_conninfo_or_pool(conninfo_or_pool: object) -> None:
    """TypeError for what is neither a conninfo string nor a pool, ValueError for a conninfo
    string that cannot be parsed (here rather than at open)."""
    if not isinstance(conninfo_or_pool, (str, ConnectionPool)):
        raise TypeError("conninfo_or_pool must be a conninfo string or a ConnectionPool")
    if isinstance(conninfo_or_pool, str):
        problem = conninfo_problem(conninfo_or_pool)  # here rather than at open
        if problem is not None:
            raise ValueError(f"conninfo_or_pool: {problem}")


def table_schema_key(
    model: ModelTable | None, table: object, key: object, schema: object
) -> tuple[str, str | None, tuple[str, ...]]:
    """The table, schema and key a sink writes, checked: as given for a table name (which needs
    ``key``), else the model's where left out."""
    if model is None:
        if key is PRIMARY_KEY:
            raise TypeError(
                f"PostgresUpsert({table!r}) needs key=: the column(s) of a unique index to "
                "upsert on, or key=None to append every row (a model or SQLAlchemy Table "
                "brings its primary key)"
            )
        table = check_name("table", table)
    else:
        table = model.table
        if schema is None:
            schema = model.schema
        if key is PRIMARY_KEY:
            key = model.primary_key
    checked_schema = None if schema is None else check_name("schema", schema)
    checked_key: tuple[str, ...] = (
        () if key is None else check_names("key", [key] if isinstance(key, str) else key)
    )
    return table, checked_schema, checked_key


def check_merge(merge: object) -> dict[str, str]:
    """``merge`` as a dict of column -> how (checked against the other options later)."""
    if merge is not None and not isinstance(merge, Mapping):
        raise TypeError(f"merge must be a dict of column -> 'add'|'max'|'min', got {merge!r}")
    return dict(merge or {})


def check_conflict_options(
    key: tuple[str, ...],
    on_conflict: str,
    update_columns: tuple[str, ...] | None,
    version_column: str | None,
    merge: dict[str, str],
) -> None:
    """ValueError for conflict options that contradict one another or the key."""
    if on_conflict not in ("update", "ignore"):
        raise ValueError(f"on_conflict must be 'update' or 'ignore', got {on_conflict!r}")
    if not key and (on_conflict != "update" or update_columns or version_column):
        raise ValueError(
            "key=None writes plain INSERTs: on_conflict, update_columns and version_column "
            "need a key"
        )
    if on_conflict == "ignore" and (update_columns or version_column or merge):
        raise ValueError(
            "on_conflict='ignore' updates nothing: drop update_columns/version_column/merge"
        )
    if not key and merge:
        raise ValueError("key=None writes plain INSERTs: merge needs a key")
    for name, how in merge.items():
        if how not in ("add", "max", "min"):
            raise ValueError(f"merge[{name!r}] must be 'add', 'max' or 'min', got {how!r}")
        if update_columns is not None and name not in update_columns:
            raise ValueError(f"merge column {name!r} must be among update_columns")
    if merge and version_column is not None:
        raise ValueError("merge and version_column do not combine: a merge has no older value")
    for name in (*(update_columns or ()), *merge, *filter(None, [version_column])):
        if name in key:
            raise ValueError(f"{name!r} is a key column: an update cannot set it")
    if (
        version_column is not None
        and update_columns is not None
        and version_column not in update_columns
    ):
        raise ValueError(
            f"version_column {version_column!r} must be among update_columns, "
            "or the version would never move"
        )


def check_method(method: object) -> str:
    """``method``, one of METHODS."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__} {method!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def check_pool_size(value: object) -> int:
    """``pool_size``, a positive int."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pool_size must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"pool_size must be at least 1, got {value}")
    return value


def check_timezone(value: object) -> tzinfo | None:
    """``naive_timezone`` as a tzinfo (None: naive datetimes are refused)."""
    if value is None or isinstance(value, tzinfo):
        return value
    if not isinstance(value, str):
        raise TypeError(f"naive_timezone must be a time zone name or a tzinfo, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"naive_timezone: unknown time zone {value!r}") from None


def check_name(argument: str, value: object) -> str:
    """``value``, a non-empty name given as ``argument``."""
    if not isinstance(value, str):
        kinds = KINDS if argument == "table" else "a non-empty string"
        raise TypeError(f"{argument} must be {kinds}, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{argument} must be a non-empty string, got {value!r}")
    return value


def check_names(argument: str, values: object) -> tuple[str, ...]:
    """``values``, distinct non-empty column names given as ``argument``."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{argument} must be a sequence of column names, got {values!r}")
    if not values:
        raise ValueError(f"{argument} must be a non-empty sequence of column names")
    names = tuple(check_name(argument, value) for value in values)
    if len(set(names)) != len(names):
        raise ValueError(f"{argument} names a column twice: {list(names)}")
    return names


def check_timeout(argument: str, value: object) -> float:
    """``value``, a positive finite number of seconds given as ``argument``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{argument} must be a number of seconds, got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argument} must be a positive finite number of seconds, got {value!r}")
    return float(value)
