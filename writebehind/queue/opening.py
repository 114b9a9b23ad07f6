"""Opening a queue's sink: one attempt at a time, so that put() never waits on the database."""

from __future__ import annotations

import logging
import threading

import psycopg

from .._sink import Sink
from ..errors import SchemaError
from .delivery import describe
from .retry import ErrorKind, classify

logger = logging.getLogger("writebehind")


def is_configuration_error(error: BaseException) -> bool:
    """Whether opening failed because the database refused this configuration (credentials,
    database, table, key), rather than because it could not be reached or answer now.

    By SQLSTATE alone, never by the message (which is in the server's language): a sink's
    connection failure carries the SQLSTATE the server refused the login with (PostgresUpsert
    reads it, see ``_refusal``). A psycopg error without one is an outage: no server answered,
    or what it said cannot be read.
    """
    if isinstance(error, SchemaError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        return classify(error) is ErrorKind.NOT_ROWS
    return not isinstance(error, psycopg.Error)


class SinkOpener:
    """The open state of one queue's sink, shared by producers and the worker.

    ``attempt()`` runs one ``sink.open()`` and records its outcome; ``wait_first`` lets the
    first put() wait for the outcome of the first attempt, and no longer than it asks.
    """

    def __init__(self, sink: Sink, name: str) -> None:
        self._sink = sink
        self._name = name
        self.changed = threading.Condition(threading.Lock())
        self.opened = False
        self.attempts = 0
        self.error: BaseException | None = None
        """The error of the last failed attempt (None once open)."""
        self.configuration_error = False
        self.wanted = False
        """A producer asks for a new attempt (it was refused with the last error)."""
        self._attempting = False
        self._logged: str | None = None

    def attempt(self) -> bool:
        """Open the sink once; True if it is open. Never raises. Called while another thread's
        attempt is under way (start() beside the worker's first), it waits for that one's
        outcome instead: the two would wait on the database one after the other."""
        with self.changed:
            if self._attempting:
                while self._attempting:
                    self.changed.wait(5.0)  # each attempt is bounded; this re-checks the flag
                return self.opened
            self._attempting = True
        try:
            try:
                self._sink.open()
            except Exception as error:
                self._failed(error)
                return False
            with self.changed:
                self.opened, self.error, self.wanted = True, None, False
                self.attempts += 1
        finally:
            with self.changed:
                self._attempting = False
                self.changed.notify_all()
        if self._logged is not None:
            logger.info("queue %s: the sink is open", self._name)
            self._logged = None
        return True

    def _failed(self, error: BaseException) -> None:
        configuration = is_configuration_error(error)
        with self.changed:
            self.error, self.configuration_error, self.wanted = error, configuration, False
            self.attempts += 1
            self.changed.notify_all()
        text = describe(error)
        if text != self._logged:  # once per cause, not once per retry
            self._logged = text
            logger.warning("queue %s: cannot open the sink: %s", self._name, text)

    def wait_first(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the first attempt to end."""
        with self.changed:
            if not self.attempts and timeout > 0:
                self.changed.wait_for(lambda: self.attempts > 0, timeout)

    def want(self) -> None:
        with self.changed:
            self.wanted = True
            self.changed.notify_all()
