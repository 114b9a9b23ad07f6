"""Key values compared as PostgreSQL compares them: values it holds equal (a uuid in either
letter case, citext, NaN) are made equal in Python too, so that rows of one key coalesce."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["KEY_CANONICAL", "NAN_KEY", "NaN"]


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


KEY_CANONICAL: dict[str, Callable[[Any], Any]] = {
    "uuid": _uuid_key,
    "citext": _citext_key,
    "numeric": _nan_key,
    "double precision": _nan_key,
    "real": _nan_key,
}
"""Per base type name: the function that makes a key value canonical."""
