"""Error classification, retry budget and backoff: pure, no I/O.

The rule, by SQLSTATE (a client-side error without one is classed by its type):

- **transient**: the same write may succeed later. Classes 08 (connection), 53 (resources), 57
  (operator intervention, statement timeout), 58 (system), and 40001, 40P01, 55P03, 55006,
  25006 (read-only transaction: a standby during a failover), 42P05 and 26000 (prepared
  statement state lost behind a pooler); a client-side OperationalError or InterfaceError (no
  connection, pool timeout). Retried in place, the batch whole.
- **not about rows**: nothing in a row can cause it. Classes 28 (authentication), 3D (no such
  database), 3F (no such schema), and 42501 (permission denied), 42P01 (no such table), 42703
  (no such column), 42P10 (no unique index for ON CONFLICT). Retried in place like a transient
  error (someone may fix the grant or the table), never split row by row.
- **rejected data**: a row's values are refused for good. Classes 22 (data exception) and 23
  (integrity constraint), 44 (WITH CHECK OPTION), 40002 (a deferred constraint at commit), a
  client-side DataError. The batch is split in halves until each refused row stands alone.
- **suspect data**: any other SQLSTATE, which may or may not be a row's fault: 42804 (datatype
  mismatch, a bool for an int column), class 54 (a key too large for its index), class P0 (a
  trigger's RAISE EXCEPTION). Split like rejected data, but when both halves of a part fail the
  same way, the first and the last row of the part are written alone: if both fail the same way
  too, the error is judged not to be about rows and the part is retried as a whole instead.
- **refused by the client**: an error raised in this process, without a SQLSTATE, while the
  batch was built or sent (a ValueError or TypeError of a value, a value psycopg cannot adapt, a
  schema mismatch, a bug): the same rows would raise it again, so it is never retried. Split
  like rejected data; a part whose halves, and first and last rows alone, all fail the same way
  is given up together, with that error.

An OSError without a SQLSTATE (a sink's own network error) is transient, and so is
CommitInDoubt (a connection lost after COMMIT was sent).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import psycopg

from ..errors import CommitInDoubt

__all__ = ["Backoff", "ErrorKind", "RetryBudget", "classify", "same_failure"]


class ErrorKind(enum.Enum):
    """What a failed write tells about the rows it carried."""

    TRANSIENT = "transient"
    """The database could not take the write now: retry the same rows."""
    NOT_ROWS = "not_rows"
    """Configuration or permissions, not any row's values: retry the same rows, never split."""
    REJECTED_DATA = "rejected_data"
    """Some row's values are refused for good: isolate it, write the others."""
    SUSPECT_DATA = "suspect_data"
    """Perhaps a row's values: isolate, unless the parts say it is not about rows."""
    CLIENT = "client"
    """Raised in this process building or sending the batch: never retried; isolate, and give
    up together the rows that all fail alike."""


_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58"})
_TRANSIENT_CODES = frozenset(
    {"40001", "40P01", "55P03", "55006", "25006", "42P05", "26000", "72000"}
)
_NOT_ROWS_CLASSES = frozenset({"28", "3D", "3F"})
_NOT_ROWS_CODES = frozenset({"42501", "42P01", "42703", "42P10"})
_DATA_CLASSES = frozenset({"22", "23", "44"})
_DATA_CODES = frozenset({"40002"})


def classify(error: BaseException) -> ErrorKind:
    """Classify an exception raised by a sink's write (see the module's docstring)."""
    if isinstance(error, CommitInDoubt):  # a lost connection, at the worst moment
        return ErrorKind.TRANSIENT
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate in _DATA_CODES or sqlstate[:2] in _DATA_CLASSES:
            return ErrorKind.REJECTED_DATA
        if sqlstate in _TRANSIENT_CODES or sqlstate[:2] in _TRANSIENT_CLASSES:
            return ErrorKind.TRANSIENT
        if sqlstate in _NOT_ROWS_CODES or sqlstate[:2] in _NOT_ROWS_CLASSES:
            return ErrorKind.NOT_ROWS
        return ErrorKind.SUSPECT_DATA
    # Without a SQLSTATE the error was raised by the client: a lost connection, a pool timeout
    # or a closed connection is operational; anything else would be raised again by the same
    # rows, and a retry would never end.
    if isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError, OSError)):
        return ErrorKind.TRANSIENT
    if isinstance(error, psycopg.DataError):
        return ErrorKind.REJECTED_DATA
    return ErrorKind.CLIENT


def same_failure(one: BaseException, other: BaseException) -> bool:
    """Whether two errors say the same thing: same SQLSTATE (or type) and the same message."""
    if type(one) is not type(other):
        return False
    if getattr(one, "sqlstate", None) != getattr(other, "sqlstate", None):
        return False
    return _primary_message(one) == _primary_message(other)


def _primary_message(error: BaseException) -> str:
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary if isinstance(primary, str) else str(error)


class RetryBudget:
    """How long a queue keeps retrying while its writes fail: pure, takes ``now``.

    The time limit runs from the first failure of the current run of failures, which may have
    begun on an earlier batch: once the database is known to be down, a later batch does not
    start a budget of its own, so rows are given up in put order, each batch after one attempt.
    Any successful write ends the run. ``max_retries`` (None: no limit) counts one batch's
    retries; ``max_retry_time`` (None: no limit) bounds the run of failures in seconds.
    """

    def __init__(self, max_retries: int | None, max_retry_time: float | None) -> None:
        self.max_retries = max_retries
        self.max_retry_time = max_retry_time
        self.failing_since: float | None = None

    def failed(self, now: float) -> None:
        """A write failed at ``now``."""
        if self.failing_since is None:
            self.failing_since = now

    def succeeded(self) -> None:
        """A write went through: the run of failures is over."""
        self.failing_since = None

    def remaining(self, retries: int, now: float) -> float | None:
        """Seconds left for retry number ``retries + 1`` of a batch, None if unlimited, or 0.0
        (or less) when the batch must be given up now."""
        if self.max_retries is not None and retries >= self.max_retries:
            return 0.0
        if self.max_retry_time is None:
            return None
        since = now if self.failing_since is None else self.failing_since
        return self.max_retry_time - (now - since)


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
