"""The connections of one sink: the one its catalog is read over, its share of a process's pool
(or the pool it borrows), and every wait on them bounded by ``write_timeout`` and interruptible."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from . import watchdog
from .pools import (
    SharedPool,
    acquire,
    connection_options,
    cut_after,
    direct_connection,
    pooled,
    release,
)

__all__ = ["SinkConnections", "autocommit"]


class SinkConnections:
    """Where a sink's connections come from: a pool shared by the sinks of the process with the
    same conninfo (taken by take_pool(), let go by detach() and release()), or a pool it was
    given, borrowed as it is."""

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any],
        *,
        connect_timeout: float,
        write_timeout: float,
        pool_size: int,
    ) -> None:
        self.conninfo = conninfo_or_pool if isinstance(conninfo_or_pool, str) else None
        self.pool: ConnectionPool[Any] | None = (
            None if isinstance(conninfo_or_pool, str) else conninfo_or_pool
        )
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.pool_size = pool_size
        self.shared: SharedPool | None = None
        self.pooled = False
        """Whether the shared pool was taken (and not let go): a forked child takes its own."""
        self.cut_after = cut_after(write_timeout)
        self.writes: set[watchdog.Bound] = set()
        self.writers = 1
        """Threads writing at once, each with a connection of the pool."""

    def for_catalog(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """The one connection open() reads the catalog over: one of its own for a conninfo
        (reading the SQLSTATE of a refusal), else one of the borrowed pool."""
        if self.conninfo is None:
            return self.borrowed()
        options = connection_options(self.conninfo, self.write_timeout)
        return direct_connection(
            self.conninfo,
            self.pool_size,
            self.connect_timeout,
            options,
            read_sqlstate=True,  # the SQLSTATE tells a refused login from an outage
        )

    def take_pool(self) -> None:
        """Take the process's pool for the conninfo (none for a borrowed pool)."""
        if self.conninfo is not None:
            self.shared = self._acquire()
            self.pooled = True

    def _acquire(self) -> SharedPool:
        assert self.conninfo is not None
        return acquire(
            self.conninfo,
            connect_timeout=self.connect_timeout,
            write_timeout=self.write_timeout,
            pool_size=self.pool_size,
            writers=self.writers,
        )

    @contextmanager
    def bounded(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the sink's, in autocommit, for ``what``: cancelled at
        ``write_timeout`` (past a grace period its connection is cut, should the server have
        stopped answering altogether), and by interrupt()."""
        with self.connection() as conn, autocommit(conn), self.bound(conn, what) as bound:
            self.writes.add(bound)
            try:
                yield conn
            finally:
                self.writes.discard(bound)

    def bound(
        self, conn: psycopg.Connection[Any], what: str
    ) -> AbstractContextManager[watchdog.Bound]:
        """Every wait on the server under ``write_timeout``: cancelled then, and its connection
        cut a grace period later (a server that stopped answering)."""
        return watchdog.bounded(
            conn,
            what,
            cancel_after=self.write_timeout,
            cut_after=self.cut_after,
            cancel_timeout=min(self.connect_timeout, 5.0),
        )

    def interrupt(self) -> None:
        """Cancel the waits under way on the server (they fail with QueryCanceled)."""
        for bound in list(self.writes):
            bound.interrupt()

    def after_fork(self) -> None:
        """Forget the parent's pool and its waits: the next connection takes a pool of this
        process's own."""
        self.writes = set()
        self.shared = None

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection of the shared pool (taken again after a fork), or the borrowed one's."""
        shared = self.shared
        if shared is None and self.pooled:
            shared = self.shared = self._acquire()  # after a fork
        if shared is not None:
            return shared.connection()
        return self.borrowed()

    def borrowed(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection of the pool the sink was given."""
        assert self.pool is not None
        return pooled(self.pool, self.connect_timeout)

    def detach(self) -> SharedPool | None:
        """Stop using the shared pool; return it, for release() (outside the sink's lock)."""
        shared, self.shared, self.pooled = self.shared, None, False
        return shared

    def release(self, shared: SharedPool | None) -> None:
        """Let ``shared`` go (it closes with its last sink)."""
        if shared is not None:
            release(shared, self.pool_size, self.writers)


@contextmanager
def autocommit(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The writers run their own transactions; a borrowed pool's connection is put back as it
    came."""
    if conn.autocommit:
        yield
        return
    conn.autocommit = True
    try:
        yield
    finally:
        with suppress(psycopg.Error):
            conn.autocommit = False
