"""Error classification and retry backoff: pure, no I/O."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import psycopg

__all__ = ["Backoff", "ErrorKind", "classify"]


class ErrorKind(enum.Enum):
    """What a failed write tells about the batch."""

    TRANSIENT = "transient"
    """The database could not take the batch now (connection, shutdown, contention): retry it."""
    REJECTED_DATA = "rejected_data"
    """Some row's data is refused for good: isolate it, write the others."""
    UNKNOWN = "unknown"
    """Anything else (permissions, schema changed under us, a sink bug): retried like transient,
    since a retry costs little and giving up is the only other choice."""


# SQLSTATE classes and codes after which the same statement may succeed later.
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58"})
_TRANSIENT_CODES = frozenset({"40001", "40P01", "55P03", "55006"})
# Class 22 (data exception) and 23 (integrity constraint violation) are caused by a row's values;
# 40002 is a deferred constraint failing at commit.
_DATA_CLASSES = frozenset({"22", "23"})
_DATA_CODES = frozenset({"40002"})


def classify(error: BaseException) -> ErrorKind:
    """Classify an exception raised by a sink's write."""
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate in _DATA_CODES or sqlstate[:2] in _DATA_CLASSES:
            return ErrorKind.REJECTED_DATA
        if sqlstate in _TRANSIENT_CODES or sqlstate[:2] in _TRANSIENT_CLASSES:
            return ErrorKind.TRANSIENT
        return ErrorKind.UNKNOWN
    # Without a SQLSTATE the error was raised by the client. Lost connections, pool timeouts
    # and closed connections are operational/interface errors; a value psycopg cannot adapt
    # raises DataError or ProgrammingError, caused by one row.
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
        return ErrorKind.TRANSIENT
    if isinstance(error, (psycopg.DataError, psycopg.ProgrammingError)):
        return ErrorKind.REJECTED_DATA
    return ErrorKind.UNKNOWN


class Backoff:
    """Exponential backoff with jitter.

    The delay before retry ``n`` (from 1) is ``min(cap, first * 2 ** (n - 1))`` scaled by a
    random factor in [0.5, 1.0], so that writers failing together do not retry in step.
    """

    def __init__(
        self, first: float, cap: float, *, random: Callable[[], float] = random.random
    ) -> None:
        self.first = first
        self.cap = cap
        self._random = random

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        exponent = min(retry - 1, 64)  # beyond this the cap has long applied
        ceiling = min(self.cap, self.first * 2.0**exponent)
        return ceiling * (0.5 + 0.5 * self._random())
