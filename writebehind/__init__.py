"""writebehind: hand rows to a background thread; they are batched and upserted into PostgreSQL.

Examples:
    >>> sink = PostgresUpsert("dbname=app", table="entries", key="id")
    >>> with WriteBehindQueue(sink) as wb:
    ...     wb.put({"id": 1, "value": "a"})
"""

from ._sink import Params, Sink
from ._version import __version__ as __version__
from .errors import (
    CommitInDoubt,
    QueueClosed,
    QueueFull,
    RowsAbandoned,
    SchemaError,
    WriteBehindError,
)
from .journal import Journal
from .postgres import PostgresUpsert
from .queue.core import FailureCallback, WriteBehindQueue
from .queue.eager import EagerQueue
from .queue.metrics import Metrics
from .queue.signals import drain_on_signals

__all__ = [
    "CommitInDoubt",
    "EagerQueue",
    "FailureCallback",
    "Journal",
    "Metrics",
    "Params",
    "PostgresUpsert",
    "QueueClosed",
    "QueueFull",
    "RowsAbandoned",
    "SchemaError",
    "Sink",
    "WriteBehindError",
    "WriteBehindQueue",
    "drain_on_signals",
]
