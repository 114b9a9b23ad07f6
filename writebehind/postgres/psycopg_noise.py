"""Keeps psycopg from logging what writebehind reports itself, better, on its own logger."""

from __future__ import annotations

import logging

__all__ = ["quiet_psycopg"]


class _PsycopgNoise(logging.Filter):
    """Drops psycopg's reports of what writebehind reports itself, better, on its own logger.

    - "error ignored terminating <Pipeline>" and "error ignored in rollback", on writebehind's
      threads: executemany() runs in a pipeline; when the database refuses a row or the
      connection is lost, psycopg raises the error and may also warn about the pipeline or
      transaction it then cannot end cleanly. The error is the queue's to report (retried, or
      the row isolated and handed to on_failure).
    - "error connecting in 'writebehind-...'", "reconnection attempt ... failed" and
      "discarding closed (or broken) connection", from writebehind's pools: each retry of a
      write logs the queue and the connection error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in _WORKER_MESSAGES:
            return not (record.threadName or "").startswith("writebehind-")
        if record.msg in _POOL_MESSAGES and isinstance(record.args, tuple) and record.args:
            return not str(record.args[0]).startswith("writebehind-")
        if record.msg in _DISCARDING and isinstance(record.args, tuple) and record.args:
            return not getattr(record.args[0], "writebehind", False)
        return True


_WORKER_MESSAGES = frozenset(
    {
        "error ignored terminating %r: %s",
        "error ignored in rollback on %s: %s",
        "error ignored in rollback of %s: %s",
    }
)
_POOL_MESSAGES = frozenset(
    {"error connecting in %r: %s", "reconnection attempt in pool %r failed after %s sec"}
)

_DISCARDING = frozenset({"discarding closed connection: %s", "discarding broken connection: %s"})

_psycopg_noise = _PsycopgNoise()


def quiet_psycopg() -> None:
    """Filter psycopg's loggers (once: the filter is added where it is missing)."""
    for logger_name in ("psycopg", "psycopg.pool"):
        psycopg_logger = logging.getLogger(logger_name)
        if _psycopg_noise not in psycopg_logger.filters:
            psycopg_logger.addFilter(_psycopg_noise)
