"""How the queue names what went wrong in its log lines and errors: an error in one line, the
keys of rows (cut short), why rows were given up."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .batch import Entry
from .retry import RetryBudget

__all__ = ["describe", "logged_keys", "out_of_budget", "shortened", "key_columns", "unchecked_key"]

# The value PostgreSQL could not take, quoted at the end of its message: a row's value.
_QUOTED_VALUE = re.compile(r': "(?:[^"]|"")*"$')
_KEYS_LOGGED = 10  # keys named in one log line when many rows fail together
_KEY_CHARS = 120  # a key's repr is cut to this in log lines (a refused key may be 16 kB)


def out_of_budget(retries: int, budget: RetryBudget) -> str:
    """Why rows were given up once the retry budget ran out."""
    limits = []
    if budget.max_retries is not None:
        limits.append(f"max_retries={budget.max_retries}")
    if budget.max_retry_time is not None:
        limits.append(f"max_retry_time={budget.max_retry_time:g}s")
    return f"given up after {retries} retries ({', '.join(limits)})"


def describe(error: BaseException) -> str:
    """One line naming the error, its SQLSTATE and its first line of text, without the value
    the server quotes at its end (``invalid input syntax for type integer: "..."``)."""
    sqlstate = getattr(error, "sqlstate", None)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if sqlstate:
        text = _QUOTED_VALUE.sub(": (the value is not shown)", text)
    if len(text) > 300:
        text = text[:300] + "…"
    kind = type(error).__name__
    return f"{kind} [{sqlstate}] {text}" if sqlstate else f"{kind}: {text}"


def logged_keys(entries: Sequence[Entry], key_columns: Sequence[str] = ()) -> str:
    """The keys of ``entries`` for a log line, the first few of many: never other values of
    their rows, which may be personal data."""
    shown = ", ".join(
        shortened(repr(entry.key)) if entry.params else unchecked_key(entry.row, key_columns)
        for entry in entries[:_KEYS_LOGGED]
    )
    more = len(entries) - _KEYS_LOGGED
    return shown + (f" and {more} more" if more > 0 else "")


def key_columns(sink: object) -> tuple[str, ...]:
    """The key columns a sink was given (empty: none given, or append-only), by which a row
    given up before the sink could read its table is logged."""
    key = getattr(sink, "key", None)
    return tuple(key) if isinstance(key, (tuple, list)) else ()


def unchecked_key(row: object, key_columns: Sequence[str]) -> str:
    """The key of a row accepted before the catalog was read (so never converted): its key
    columns as given, when the sink names them; else no value at all."""
    if key_columns and isinstance(row, Mapping) and all(c in row for c in key_columns):
        return shortened(repr({column: row[column] for column in key_columns}))
    return "(a row not checked yet)"


def shortened(text: str) -> str:
    """``text`` cut for a log line (a refused key may be 16 kB)."""
    return text if len(text) <= _KEY_CHARS else f"{text[:_KEY_CHARS]}… ({len(text)} chars)"
