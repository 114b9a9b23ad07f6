"""A batch turned into columns that one statement can carry: an array per column (unnest) or a
typed column of a staging table (COPY).

PostgreSQL takes a binary array only of one element type, and psycopg refuses a list of mixed
Python types. So each column of a batch is looked at once: a column whose values are all of one
plain Python type (or None) goes as it is, in the type psycopg gives that Python type, and the
statement casts it to the column's type. Any other column (mixed types, lists for an array
column, tuples, ranges, types with adapters of the application's) goes as text: each value
dumped by psycopg's own text dumper, as ``executemany`` would send it, and cast by the server.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from psycopg.abc import AdaptContext
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.json import Json, Jsonb

from ._sink import Params

__all__ = ["EncodedColumn", "encode_columns"]

# The Python types sent as they are, and the PostgreSQL type each goes as (in COPY).
_WIRE_TYPES: dict[type, str] = {
    str: "text",
    int: "int8",
    float: "float8",
    Decimal: "numeric",
    bool: "bool",
    bytes: "bytea",
    uuid.UUID: "uuid",
    datetime.date: "date",
    datetime.timedelta: "interval",
    Jsonb: "jsonb",
    Json: "json",
}
_INT8 = range(-(2**63), 2**63)


@dataclass(frozen=True)
class EncodedColumn:
    values: list[Any]
    """One value per row, each of the type ``wire_type`` names (or None)."""
    wire_type: str
    """The PostgreSQL type (in pg_catalog) the values go as."""
    all_null: bool
    """Every value is None: the column has no type of its own in this batch."""


def encode_columns(rows: Sequence[Params], context: AdaptContext) -> list[EncodedColumn]:
    """The columns of ``rows`` (tuples of one length), each ready to go as one typed array;
    ``context`` (a connection) has the adapters that turn a value into text."""
    return [_encode(list(values), context) for values in zip(*rows, strict=True)]


def _encode(values: list[Any], context: AdaptContext) -> EncodedColumn:
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return EncodedColumn(values, "text", True)
    if len(kinds) == 1:
        (kind,) = kinds
        wire = _WIRE_TYPES.get(kind)
        if wire is not None and (kind is not int or _fits_int8(values)):
            return EncodedColumn(values, wire, False)
        if kind is datetime.datetime:
            aware = {value.tzinfo is not None for value in values if value is not None}
            if len(aware) == 1:  # a naive and an aware datetime are two types to PostgreSQL
                return EncodedColumn(values, "timestamptz" if aware.pop() else "timestamp", False)
    return EncodedColumn(_as_text(values, context), "text", False)


def _fits_int8(values: list[Any]) -> bool:
    present = [value for value in values if value is not None]
    return min(present) in _INT8 and max(present) in _INT8


def _as_text(values: list[Any], context: AdaptContext) -> list[str | None]:
    transformer = Transformer.from_context(context)
    dumpers: dict[type, Any] = {}
    texts: list[str | None] = []
    for value in values:
        if value is None:
            texts.append(None)
            continue
        dumper = dumpers.get(type(value))
        if dumper is None:
            dumper = transformer.get_dumper(value, PyFormat.TEXT)
            if not isinstance(value, list):  # a list's dumper depends on what it holds
                dumpers[type(value)] = dumper
        dumped = dumper.dump(value)
        texts.append(None if dumped is None else bytes(dumped).decode())
    return texts
