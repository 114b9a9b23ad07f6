"""Tables described by an ORM: a SQLAlchemy ``Table`` or mapped class, or a Django model class.

``describe(table)`` gives what a sink needs of one (its table, schema, primary key, how an
instance becomes a row and the Python-side defaults of its columns), or None for a table name.
SQLAlchemy and Django are imported only when such an object is given: an object of theirs
cannot exist without them being imported already.
"""

from __future__ import annotations

import sys
from typing import Any

from ._model import ModelTable

__all__ = ["ModelTable", "describe"]

KINDS = "a table name (str), a SQLAlchemy Table or mapped class, or a Django model class"


def describe(table: object) -> ModelTable | None:
    """The model behind ``table``; None for a str. TypeError for any other object."""
    if isinstance(table, str):
        return None
    if "sqlalchemy" in sys.modules:
        from . import _sqlalchemy

        found = _sqlalchemy.describe(table)
        if found is not None:
            return found
    if "django.db.models" in sys.modules:
        from . import _django

        found = _django.describe(table)
        if found is not None:
            return found
    raise TypeError(f"table must be {KINDS}, got {_what(table)}")


def _what(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    return f"{type(value).__name__} {value!r}"[:200]
