"""A batch turned into columns that one statement can carry: an array per column (unnest) or a
typed column of a staging table (COPY).

PostgreSQL takes a binary array only of one element type, and psycopg refuses a list of mixed
Python types. So each column of a batch is looked at once: a column whose values are all of one
plain Python type (or None) goes as it is, in the type psycopg gives that Python type, and the
statement casts it to the column's type. Any other column (mixed types, lists for an array
column, tuples, ranges, types with adapters of the application's) goes as text: each value
dumped by psycopg's own text dumper, as ``executemany`` would send it, and cast by the server.

Into a string column (text, varchar, citext: ``typcategory`` S) the server stores a value's text
as the value's own type prints it (a uuid with its dashes, a bool as ``true``), which is not
always psycopg's text for it. So a string column of mixed types goes as several parts, one per
type, each with NULLs where a row's value is of another type, and the statement takes the one
part that holds a row's value: every method stores the same text.
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

from .._sink import Params

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
    column: int = 0
    """The table column (its index among the written ones) the values are for: one, or for a
    string column of mixed types, several parts in a row."""


def encode_columns(
    rows: Sequence[Params], context: AdaptContext, string_columns: frozenset[int] = frozenset()
) -> list[EncodedColumn]:
    """The columns of ``rows`` (tuples of one length), each ready to go as one typed array, in
    column order; ``context`` (a connection) has the adapters that turn a value into text. A
    column whose index is in ``string_columns`` and whose values are of several types comes
    as several parts (see the module's docstring)."""
    encoded = []
    for index, values in enumerate(zip(*rows, strict=True)):
        if index in string_columns:
            encoded.extend(_encode_string_column(list(values), context, index))
        else:
            encoded.append(_encode(list(values), context, index))
    return encoded


def _wire_type(value: Any) -> str | None:
    """The type ``value`` goes as by itself, or None for text."""
    kind = type(value)
    if kind is datetime.datetime:
        return "timestamp" if value.tzinfo is None else "timestamptz"
    if kind is int and value not in _INT8:
        return None
    return _WIRE_TYPES.get(kind)


def _encode(values: list[Any], context: AdaptContext, column: int = 0) -> EncodedColumn:
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return EncodedColumn(values, "text", True, column)
    if len(kinds) == 1:
        (kind,) = kinds
        wire = _WIRE_TYPES.get(kind)
        if wire is not None and (kind is not int or _fits_int8(values)):
            return EncodedColumn(values, wire, False, column)
        if kind is datetime.datetime:
            aware = {value.tzinfo is not None for value in values if value is not None}
            if len(aware) == 1:  # a naive and an aware datetime are two types to PostgreSQL
                wire = "timestamptz" if aware.pop() else "timestamp"
                return EncodedColumn(values, wire, False, column)
    return EncodedColumn(_as_text(values, context), "text", False, column)


def _encode_string_column(
    values: list[Any], context: AdaptContext, column: int
) -> list[EncodedColumn]:
    wires = [None if value is None else (_wire_type(value) or "text") for value in values]
    kinds = set(wires)
    kinds.discard(None)
    if len(kinds) <= 1:
        return [_encode(values, context, column)]
    parts = []
    for wire in sorted(kinds, key=str):  # one order for one set of types: statements are reused
        mine = [value if sent == wire else None for value, sent in zip(values, wires, strict=True)]
        if wire == "text":
            mine = _as_text(mine, context)
        parts.append(EncodedColumn(mine, str(wire), False, column))
    return parts


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
