"""Key values compared as PostgreSQL compares them: values it holds equal (a uuid in either
letter case, citext, NaN, the text "7" and the number 7 for an integer column, as a URL gives
a key) are made equal in Python too, so that the writes of one key coalesce and keep their
order."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["KEY_CANONICAL", "NAN_KEY", "NaN", "text_key"]


def _uuid_key(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            return value  # the database will refuse it, and the row be isolated
    return value


def _citext_key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class NaN:
    """PostgreSQL holds NaN equal to NaN (numeric and float), Python does not."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NaN)

    def __hash__(self) -> int:
        return 0x7FF8

    def __repr__(self) -> str:
        return "NaN"


NAN_KEY = NaN()
"""The one stand-in for a NaN key value."""


def _nan_key(value: Any) -> Any:
    if isinstance(value, float):
        return NAN_KEY if math.isnan(value) else value
    if isinstance(value, Decimal):
        return NAN_KEY if value.is_nan() else value  # a signaling NaN raises on comparison
    return value


def _integer_key(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)  # as the server reads it: spaces around, a sign
        except ValueError:
            pass
        try:
            return int(value.strip(), 0)  # 0x10, 0o21, 0b101, 1_000: PostgreSQL 16 reads them
        except ValueError:
            return value  # the server decides
    return value


def _numeric_key(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except ArithmeticError:
            return value
    return _nan_key(value)


def text_key(value: Any) -> Any:
    """A value for a text column as the column holds it: a number is written as its text."""
    return str(value) if type(value) is int else value


def _blank_padded_key(value: Any) -> Any:
    # char(n) compares without its trailing spaces.
    return text_key(value).rstrip(" ") if isinstance(value, (str, int)) else value


KEY_CANONICAL: dict[str, Callable[[Any], Any]] = {
    "smallint": _integer_key,
    "integer": _integer_key,
    "bigint": _integer_key,
    "text": text_key,
    "character varying": text_key,
    "character": _blank_padded_key,
    "uuid": _uuid_key,
    "citext": _citext_key,
    "numeric": _numeric_key,
    "double precision": _nan_key,
    "real": _nan_key,
}
"""Per base type name: the function that makes a key value canonical."""
