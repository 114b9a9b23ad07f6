"""Connection pools shared by the sinks of one process that write to the same database.

One ``psycopg_pool.ConnectionPool`` per (process, conninfo, timeouts): queues on the same database
share its connections, so 50 queues need as many connections as can write at once, not 100.
A pool keeps no connection open while idle (``min_size=0``), and is closed when its last sink
lets it go. Besides the per-queue metric families this is the package's only module-level state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from . import watchdog
from .server_errors import with_sqlstate

logger = logging.getLogger("writebehind")

__all__ = [
    "ConnectionUnavailable",
    "IdleCheck",
    "SharedPool",
    "acquire",
    "connection_options",
    "cut_after",
    "direct_connection",
    "opening_slot",
    "pooled",
    "release",
]

# While connections stay unused, the pool closes one each period of this many seconds, down to
# none: a queue idle for a minute holds no connection, and reconnecting costs a few ms.
_MAX_IDLE = 15.0
# A connection idle longer than this is checked (one round trip) before a write uses it: the
# server may have ended it meanwhile (a restart, pg_terminate_backend, idle_session_timeout),
# and a retry after a backoff would otherwise fail again on it. Back-to-back writes skip it.
_CHECK_AFTER_IDLE = 0.5
_READ_ONLY = "25006"  # read_only_sql_transaction


class ConnectionUnavailable(psycopg.OperationalError):
    """No connection within ``connect_timeout``, or none whose server answered a check within
    ``write_timeout``; the message names the last connection error."""


def cut_after(write_timeout: float) -> float:
    """When the watchdog cuts the connection of a wait on the server still running: up to 5 s
    past ``write_timeout``, the grace a cancel request gets."""
    return write_timeout + min(5.0, write_timeout)


class IdleCheck:
    """Checks a connection idle for more than _CHECK_AFTER_IDLE seconds (or of unknown age)
    before it is used, within ``write_timeout``: a server that stopped answering while the
    connection was idle is cut off like a write, not waited for."""

    def __init__(self, write_timeout: float, cancel_timeout: float) -> None:
        self.write_timeout = write_timeout
        self.cancel_timeout = cancel_timeout

    def needed(self, conn: psycopg.Connection[Any]) -> bool:
        returned = getattr(conn, "_writebehind_returned_at", None)
        return returned is None or time.monotonic() - returned > _CHECK_AFTER_IDLE

    def __call__(self, conn: psycopg.Connection[Any]) -> bool:
        """Check ``conn``: True if it answered, False if it is broken (it failed at once).
        ConnectionUnavailable if its server did not answer within ``write_timeout``."""
        with watchdog.bounded(
            conn,
            "checking a connection idle for a while",
            cancel_after=self.write_timeout,
            cut_after=cut_after(self.write_timeout),
            cancel_timeout=self.cancel_timeout,
        ) as bound:
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.Error as error:
                if not bound.expired:
                    return False
                raise ConnectionUnavailable(
                    f"the server did not answer a connection check within write_timeout "
                    f"({self.write_timeout:g}s): {_one_line(error)}"
                ) from error
        return True


def _one_line(error: BaseException) -> str:
    return str(error).strip().replace("\n", " ")


def connection_options(conninfo: str, write_timeout: float) -> dict[str, Any]:
    """libpq settings that bound a wait on a server or network that stops answering, for a TCP
    connection (ignored on a Unix socket): keepalives, and ``tcp_user_timeout`` for data the
    server does not acknowledge. Settings the conninfo already has are left alone."""
    given = conninfo_to_dict(conninfo)
    options: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": max(1, round(write_timeout / 3)),
        "keepalives_interval": max(1, round(write_timeout / 9)),
        "keepalives_count": 3,
        "tcp_user_timeout": max(1, round(write_timeout * 1000)),
    }
    return {name: value for name, value in options.items() if name not in given}


class SharedPool:
    """One pool and the sinks using it. ``connection()`` names the real cause of a failure to
    connect, where the pool alone would only say that it timed out."""

    def __init__(
        self,
        key: tuple[Any, ...],
        conninfo: str,
        connect_timeout: float,
        write_timeout: float,
        **kwargs: Any,
    ):
        self.key = key
        self.sizes: list[tuple[int, int]] = []  # (pool_size, writers) of each sink using it
        self.last_error: BaseException | None = None
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._connect_timeout = connect_timeout
        self._check = IdleCheck(write_timeout, min(connect_timeout, 5.0))
        shared = self

        class RecordingConnection(psycopg.Connection[Any]):
            writebehind = True  # tells writebehind's log filter this connection is its own

            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = super().connect(*args, **kwargs)
                except Exception as error:
                    shared.last_error = error
                    raise
                shared.last_error = None
                return conn

        given = conninfo_to_dict(conninfo)
        pool_kwargs = dict(kwargs)
        if "connect_timeout" not in given:
            # The pool connects on threads of its own: bounded, or a server that stops
            # answering during a connection attempt would hold one of them for good.
            pool_kwargs["connect_timeout"] = max(1, round(connect_timeout))
        self.pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
            kwargs=pool_kwargs,
            connection_class=RecordingConnection,
            min_size=0,
            max_size=1,
            open=False,
            name=f"writebehind-{os.getpid()}-{len(_pools)}",
            timeout=connect_timeout,
            # The pool's own reconnection backoff grows to minutes; cutting it at
            # connect_timeout makes the next write start a fresh attempt, so writing resumes
            # within seconds of the server's return.
            reconnect_timeout=connect_timeout,
            max_idle=_MAX_IDLE,
        )
        self.pool.open(wait=False)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one transaction: committed if the block succeeds, else rolled back.

        While the pool's last attempt to connect failed, the connection is made here, directly,
        so that an outage costs each retry one attempt (not a wait of ``connect_timeout`` on
        the pool) and the error is the real one. ConnectionUnavailable (a
        psycopg.OperationalError) when the pool gives none within ``connect_timeout``."""
        if self.last_error is not None:
            slots = max((size for size, _ in self.sizes), default=1)
            with direct_connection(
                self._conninfo, slots, self._connect_timeout, self._kwargs
            ) as conn:
                self.last_error = None  # the server answers: the pool may try again
                yield conn
            return
        with pooled(self.pool, self._connect_timeout, lambda: self.last_error, self._check) as conn:
            yield conn

    def _resize(self) -> None:
        # As many connections as sinks can write at once, up to the largest pool_size asked.
        writers = sum(writers for _, writers in self.sizes)
        size = max(1, min(writers, max((size for size, _ in self.sizes), default=1)))
        if size != self.pool.max_size:
            self.pool.resize(min_size=0, max_size=size)


@contextmanager
def direct_connection(
    conninfo: str,
    slots: int,
    connect_timeout: float,
    options: Mapping[str, Any],
    *,
    read_sqlstate: bool = False,
) -> Iterator[psycopg.Connection[Any]]:
    """A connection of its own to ``conninfo`` (one attempt, bounded by ``connect_timeout``),
    in one of ``slots`` places (see opening_slot), for one transaction; closed afterwards. The
    error of a failed attempt is psycopg's own, naming the cause; with ``read_sqlstate``, a
    server's refusal of the login carries its SQLSTATE (see ``_refusal``), read with one more
    attempt."""
    timeout = max(1, round(connect_timeout))
    with opening_slot(conninfo, slots, connect_timeout):
        started = time.monotonic()
        try:
            conn = psycopg.connect(conninfo, connect_timeout=timeout, **options)
        except psycopg.errors.ConnectionTimeout:
            raise  # no server answered: nothing to read, and no time to spend asking again
        except psycopg.OperationalError as error:
            if not read_sqlstate:
                raise
            # A server that refused the login answers the second attempt as fast.
            took = time.monotonic() - started
            probe = min(connect_timeout, max(1.0, 2 * took))
            with_sqlstate(error, make_conninfo(conninfo, connect_timeout=timeout, **options), probe)
            raise
        with conn:
            yield conn


@contextmanager
def pooled(
    pool: ConnectionPool[Any],
    timeout: float,
    last_error: Callable[[], BaseException | None] = lambda: None,
    check: IdleCheck | None = None,
) -> Iterator[psycopg.Connection[Any]]:
    """A connection of ``pool`` for one transaction: committed if the block succeeds, else
    rolled back. With ``check``, a connection idle for a while is checked first: a broken one
    is discarded and the next one taken, within ``timeout``. ConnectionUnavailable when none
    comes within ``timeout`` (naming ``last_error()``, the last connection error, if known),
    or when a checked one's server does not answer within the check's ``write_timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        conn = _getconn(pool, max(0.0, deadline - time.monotonic()), timeout, last_error)
        if check is None or not check.needed(conn):
            break
        try:
            answered = check(conn)
        except BaseException:
            pool.putconn(conn)  # cut: the pool discards it
            raise
        if answered:
            break
        pool.putconn(conn)  # broken while idle (a restart): discarded, the next one is taken
    try:
        with conn:
            yield conn
    except psycopg.Error as error:
        if getattr(error, "sqlstate", None) == _READ_ONLY:
            # On a server that is a standby now (a failover): the next attempt connects
            # again, and a multi-host conninfo's target_session_attrs finds the primary.
            conn.close()
        raise
    finally:
        conn._writebehind_returned_at = time.monotonic()
        pool.putconn(conn)


def _getconn(
    pool: ConnectionPool[Any],
    remaining: float,
    timeout: float,
    last_error: Callable[[], BaseException | None],
) -> Any:  # the pool's connection class, which the returned-at time is set on
    try:
        return pool.getconn(remaining)
    except PoolTimeout as timed_out:
        cause = last_error()
        if cause is None:
            raise ConnectionUnavailable(
                f"no connection within {timeout:g}s: the server did not answer in time"
            ) from timed_out
        raise ConnectionUnavailable(
            f"{timed_out}; last connection error: {_one_line(cause)}"
        ) from (cause)


_pools: dict[tuple[Any, ...], SharedPool] = {}
_gates: dict[tuple[int, str], threading.BoundedSemaphore] = {}
_lock = threading.Lock()


@contextmanager
def opening_slot(conninfo: str, slots: int, timeout: float) -> Iterator[None]:
    """One of ``slots`` places for a connection of its own to ``conninfo`` (a sink reading the
    catalog), so that many queues opening at once do not exhaust the server's connections.
    ConnectionUnavailable if none frees up within ``timeout``."""
    key = (os.getpid(), conninfo)
    with _lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = threading.BoundedSemaphore(slots)
    if not gate.acquire(timeout=timeout):
        raise ConnectionUnavailable(f"no free connection slot within {timeout:g}s")
    try:
        yield
    finally:
        gate.release()


def _forget_in_child() -> None:
    # The parent's pools are the parent's (their threads did not survive the fork), and another
    # thread may have held the lock at the fork.
    global _lock
    _lock = threading.Lock()
    _pools.clear()
    _gates.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def acquire(
    conninfo: str,
    *,
    connect_timeout: float,
    write_timeout: float,
    pool_size: int,
    writers: int = 1,
) -> SharedPool:
    """The pool of this process for ``conninfo``, created on first use, with room for
    ``writers`` more writes at once (up to ``pool_size``); pair with release()."""
    key = (os.getpid(), conninfo, connect_timeout, write_timeout)
    with _lock:
        shared = _pools.get(key)
        if shared is None:
            options = connection_options(conninfo, write_timeout)
            shared = _pools[key] = SharedPool(
                key, conninfo, connect_timeout, write_timeout, **options
            )
        shared.sizes.append((pool_size, writers))
        shared._resize()
        return shared


def release(shared: SharedPool, pool_size: int, writers: int = 1) -> None:
    """One sink is done with ``shared``; the last one closes it."""
    with _lock:
        shared.sizes.remove((pool_size, writers))
        if shared.sizes:
            shared._resize()
            return
        if _pools.get(shared.key) is shared:
            del _pools[shared.key]
    shared.pool.close()
