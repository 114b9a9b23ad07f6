"""What an error from the server says, whatever language the server speaks: why it refused a
connection (by SQLSTATE), and whether a connection ended under a statement.


A connection that fails while logging in carries no SQLSTATE in psycopg (libpq keeps only the
message, in the server's ``lc_messages``, which a client cannot choose before it is in). libpq
does put the SQLSTATE into the message at the "verbose" error verbosity, which psycopg does not
expose: so a failed attempt is made once more, through libpq directly (``psycopg.pq``), with the
verbosity set through the ``PGconn`` pointer psycopg publishes for this, and the SQLSTATEs are
read from its message. Where libpq cannot be found in the process (not Linux, say), nothing is
read, and the failure keeps no SQLSTATE.
"""

from __future__ import annotations

import ctypes
import logging
import re
import select
import time
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

__all__ = ["connection_lost", "refusal_codes", "with_sqlstate"]

logger = logging.getLogger("writebehind")

_PQERRORS_VERBOSE = 2
# libpq's verbose message: "<severity>:  <SQLSTATE>: <message>", one per host tried.
_CODE = re.compile(r":  ([0-9A-Z]{5}): ")
_NOT_NOW = frozenset({"08", "53", "57"})


@cache
def _set_verbosity() -> Any:
    """libpq's PQsetErrorVerbosity, from the libpq psycopg loaded (None if not found)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = sorted({line.split()[-1] for line in maps.splitlines() if "/libpq" in line})
    for path in paths:
        try:
            function = ctypes.CDLL(path).PQsetErrorVerbosity
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_void_p, ctypes.c_int]
        function.restype = ctypes.c_int
        return function
    return None


def refusal_codes(conninfo: str, timeout: float) -> tuple[str, ...]:
    """The SQLSTATEs a new attempt to connect to ``conninfo`` is refused with, one per server
    that answered (several hosts: in the order tried), within ``timeout`` seconds; () if it
    connects, or no server answered, or the codes cannot be read here."""
    set_verbosity = _set_verbosity()
    if set_verbosity is None:
        return ()
    conn = pq.PGconn.connect_start(conninfo.encode())
    try:
        pointer = getattr(conn, "pgconn_ptr", None)  # every implementation has it
        if pointer is None or conn.status == pq.ConnStatus.BAD:
            return ()
        set_verbosity(pointer, _PQERRORS_VERBOSE)
        deadline = time.monotonic() + timeout
        while True:
            status = conn.connect_poll()
            if status == pq.PollingStatus.OK:
                return ()
            if status == pq.PollingStatus.FAILED:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ()
            waiting = [conn.socket]
            if status == pq.PollingStatus.READING:
                select.select(waiting, [], [], remaining)
            else:
                select.select([], waiting, [], remaining)
        return tuple(_CODE.findall(conn.get_error_message()))
    except (OSError, psycopg.Error):
        return ()
    finally:
        conn.finish()


def with_sqlstate(error: psycopg.OperationalError, conninfo: str, timeout: float) -> None:
    """Give ``error``, a failure to connect to ``conninfo`` without a SQLSTATE, the SQLSTATE
    the server refuses the connection with (``error.sqlstate``; it stays the OperationalError
    psycopg raised, its message the server's), read with one more attempt within ``timeout``
    seconds; left as it is if the server gives none. Of several hosts' codes, a "not now" one
    (classes 08, 53, 57) is taken first: one host being full or starting makes the failure an
    outage, whatever another host said."""
    if getattr(error, "sqlstate", None):
        return
    codes = refusal_codes(conninfo, timeout)
    if codes:
        error.sqlstate = next((c for c in codes if c[:2] in _NOT_NOW), codes[-1])


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` says the connection ended under a statement: no answer came (a
    client-side OperationalError, the socket cut), or the server ended the session (class 08,
    57P01-57P03), rather than answering the statement with an error of its own."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    sqlstate = getattr(error, "sqlstate", None)
    return not sqlstate or sqlstate[:2] == "08" or sqlstate in _SESSION_ENDED


_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})
