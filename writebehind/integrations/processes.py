"""Queues described by plain settings (name -> options), for the framework integrations.

Flask's ``WRITEBEHIND_QUEUES`` and Django's ``WRITEBEHIND["QUEUES"]`` share this: the options
are checked when the application starts, and each process builds its own queues lazily, on first
use, so that a server that forks after loading the application (gunicorn ``--preload``) forks
before any thread or connection exists.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from prometheus_client import REGISTRY
from psycopg.conninfo import conninfo_to_dict

from ..errors import SchemaError
from ..postgres.upsert import PRIMARY_KEY, PostgresUpsert
from ..queue.core import WriteBehindQueue
from ..queue.eager import EagerConnection, EagerQueue, OwnConnection
from ..queue.options import check_registry

__all__ = ["CLOSE_TIMEOUT", "ProcessQueues", "Queue", "QueueSpec", "parse_queues"]

Queue = WriteBehindQueue | EagerQueue
"""What the integrations hand out: a background queue, or an eager one in tests."""

CLOSE_TIMEOUT = 5.0
"""Default longest wait, in seconds, of the integrations' close() for their queues to drain."""


def _keywords(function: Callable[..., Any]) -> frozenset[str]:
    parameters = inspect.signature(function).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


SINK_OPTIONS = _keywords(PostgresUpsert.__init__)
# ``clock`` is the queue's hook for tests, not a setting.
QUEUE_OPTIONS = _keywords(WriteBehindQueue.__init__) - {"clock"}
REQUIRED_OPTIONS = ("table",)  # and "key", unless the table is a model
OPTIONS = frozenset({*REQUIRED_OPTIONS, "key"}) | SINK_OPTIONS | QUEUE_OPTIONS


@dataclass(frozen=True)
class QueueSpec:
    """One configured queue: where its settings live, its conninfo and its options."""

    name: str
    setting: str
    """How the user spells this queue's settings, for error messages."""
    conninfo: str | Callable[[], str]
    """The conninfo, or a function giving the one in force (Django's test database)."""
    table: str | Any
    """A table name, or a model (a SQLAlchemy Table or mapped class, a Django model)."""
    key: str | tuple[str, ...] | None | Any
    """The key as given (``PRIMARY_KEY``: not given, a model's primary key)."""
    sink_options: Mapping[str, Any]
    queue_options: Mapping[str, Any]

    def build(self) -> WriteBehindQueue:
        """A new queue (not started: no thread, no connection) over its own PostgresUpsert."""
        options = {"name": self.name, **self.queue_options}
        return WriteBehindQueue(self._sink(), **options)

    def build_eager(self, connection: EagerConnection | None = None) -> EagerQueue:
        """A new EagerQueue writing through ``connection`` (default: one of its own, to this
        spec's database). Of the queue's options only ``on_failure``, ``registry`` and
        ``name`` apply: nothing is batched, retried or waited for."""
        if connection is None:
            timeout = self.sink_options.get("connect_timeout", 5.0)
            connection = OwnConnection(self.current_conninfo(), timeout)
        options = self.queue_options
        return EagerQueue(
            self._sink(),
            connection,
            on_failure=options.get("on_failure"),
            registry=options.get("registry", REGISTRY),
            name=options.get("name", self.name),
        )

    def _sink(self) -> PostgresUpsert:
        return PostgresUpsert(self.current_conninfo(), self.table, self.key, **self.sink_options)

    def current_conninfo(self) -> str:
        return self.conninfo() if callable(self.conninfo) else self.conninfo

    def verify(self) -> None:
        """Connect once and check the table, key and columns against the catalog.

        Raises SchemaError for an unusable table, or the psycopg error met when connecting.
        """
        conninfo = self.current_conninfo()
        sink = PostgresUpsert(conninfo, self.table, self.key, **self.sink_options)
        timeout = max(1, round(sink.connect_timeout))
        with psycopg.connect(conninfo, connect_timeout=timeout) as conn:
            sink.configure(conn)  # the checks the sink makes when it opens
        problems = sink.unwritable_columns()
        if problems:
            raise SchemaError(problems[0])

    @property
    def table_name(self) -> str:
        """The table's name, as messages give it."""
        return str(self.table) if isinstance(self.table, str) else _sink_table(self)


def parse_queues(
    conninfo: object,
    queues: object,
    *,
    setting: str,
    dsn_setting: str,
    current_conninfo: Callable[[], str] | None = None,
) -> dict[str, QueueSpec]:
    """Check the queue settings and return a spec per queue name.

    ``setting`` and ``dsn_setting`` are how the user spells the queues' setting and the
    conninfo's (``WRITEBEHIND_QUEUES``, ``WRITEBEHIND_DSN``), so that every error names the
    offending key: ``WRITEBEHIND_QUEUES['events']['batch_size']``.
    Raises ValueError (or TypeError for a value of the wrong type); builds nothing and connects
    nowhere. ``on_failure`` may be a callable or the dotted path of one. ``current_conninfo``,
    if given, is asked for the conninfo each time a queue is built (``conninfo`` is checked).
    """
    if not isinstance(queues, Mapping):
        raise TypeError(f"{setting} must be a dict of queue name -> options, got {queues!r}")
    if queues and (not isinstance(conninfo, str) or not conninfo):
        raise ValueError(f"{dsn_setting} must be a conninfo string, got {conninfo!r}")
    if queues:
        try:
            conninfo_to_dict(str(conninfo))
        except psycopg.ProgrammingError as error:
            raise ValueError(f"{dsn_setting} is not a valid conninfo: {error}") from None
    specs = {}
    for name, options in queues.items():
        where = f"{setting}[{name!r}]"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{setting}: queue names must be non-empty strings, got {name!r}")
        spec = _parse_queue(name, str(conninfo), options, where)
        if current_conninfo is not None:
            spec = replace(spec, conninfo=current_conninfo)
        specs[name] = spec
    return specs


def _parse_queue(name: str, conninfo: str, options: object, where: str) -> QueueSpec:
    if not isinstance(options, Mapping):
        raise TypeError(f"{where} must be a dict of options (table, key, ...), got {options!r}")
    for option in options:
        if option not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise ValueError(f"{where}[{option!r}] is not an option; the options are: {known}")
    for option in REQUIRED_OPTIONS:
        if option not in options:
            raise ValueError(f"{where}[{option!r}] is missing")
    key = options.get("key", PRIMARY_KEY)
    sink_options = {k: v for k, v in options.items() if k in SINK_OPTIONS}
    queue_options = {k: v for k, v in options.items() if k in QUEUE_OPTIONS}
    if isinstance(queue_options.get("on_failure"), str):
        queue_options["on_failure"] = _import(queue_options["on_failure"], f"{where}['on_failure']")
    spec = QueueSpec(
        name=name,
        setting=where,
        conninfo=conninfo,
        table=options["table"],
        key=key if key is None or key is PRIMARY_KEY or isinstance(key, str) else tuple(key),
        sink_options=sink_options,
        queue_options=queue_options,
    )
    # The constructors' own checks, run now so that a bad value fails at startup. With no
    # registry nothing is registered, and neither constructor starts or connects anything.
    try:
        sink = PostgresUpsert(conninfo, spec.table, spec.key, **sink_options)
        WriteBehindQueue(sink, **{"name": name, **queue_options, "registry": None})
        check_registry(queue_options.get("registry"))  # not given above: it would register
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from error
    return spec


def _sink_table(spec: QueueSpec) -> str:
    return PostgresUpsert(spec.current_conninfo(), spec.table, spec.key, **spec.sink_options).table


def _import(path: str, where: str) -> Any:
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"{where}: cannot import {path!r}: {error}") from error


class ProcessQueues:
    """The queues of one configuration in the current process, each built on first use.

    A process forked from one that had built queues builds its own: the parent's queues, their
    rows and their connections stay the parent's.
    """

    def __init__(
        self,
        specs: Mapping[str, QueueSpec],
        build: Callable[[QueueSpec], Queue] = QueueSpec.build,
    ) -> None:
        self.specs = dict(specs)
        self._build = build
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._queues: dict[str, Queue] = {}

    def get(self, name: str) -> Queue:
        """The queue ``name``, built now if this process has none. KeyError if not configured."""
        spec = self.specs.get(name)
        if spec is None:
            configured = ", ".join(map(repr, self.specs)) or "none"
            raise KeyError(f"no queue {name!r} is configured (configured: {configured})")
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._queues = os.getpid(), {}
            queue = self._queues.get(name)
            if queue is None:
                queue = self._queues[name] = self._build(spec)
            return queue

    def close(self, timeout: float | None = None) -> None:
        """Drain and close every queue this process built; later get() calls build new ones.

        ``timeout`` bounds the whole call (None: as long as the drain takes): every queue
        drains at the same time. A queue still draining then goes on in the background.
        """
        with self._lock:
            queues = list(self._queues.values()) if self._pid == os.getpid() else []
            self._queues = {}
        for queue in queues:
            queue.stop_accepting()
        deadline = None if timeout is None else time.monotonic() + timeout
        for queue in queues:
            queue.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
