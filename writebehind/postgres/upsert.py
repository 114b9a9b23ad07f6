"""PostgresUpsert: writes batches with INSERT ... ON CONFLICT ... DO UPDATE."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
from psycopg_pool import ConnectionPool

from .._sink import Deletion, Merger, Params, ProgressMark, Replaces, RowLayout, Target
from ..errors import CommitInDoubt, ProgressConflict
from ..models import KINDS, ModelTable, describe
from ..models._model import foreign_instance
from ..models._rows import ModelRows
from . import watchdog
from .catalog import TableInfo, read_table
from .conninfo import conninfo_problem
from .deferred import deferred_checked
from .layout import Layout, Rules, journaled, of_sink
from .methods import METHODS, Writer, commit_was_sent, execute_each, write_progress
from .pools import (
    SharedPool,
    acquire,
    connection_options,
    cut_after,
    direct_connection,
    pooled,
    release,
)
from .progress import ProgressTable, check_marks, check_prefix, is_conflict
from .server_errors import connection_lost

__all__ = ["PRIMARY_KEY", "PostgresUpsert"]


class _PrimaryKey:
    def __repr__(self) -> str:
        return "PRIMARY_KEY"


PRIMARY_KEY: Any = _PrimaryKey()
"""``key``'s default: the primary key of a model or SQLAlchemy Table given as ``table``."""

logger = logging.getLogger("writebehind")


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


class PostgresUpsert:
    """Upserts batches into one table, one transaction per batch, through a connection pool.

    ``conninfo_or_pool`` is a conninfo string, from which a pool is created when the sink opens
    and closed by close(); or a ``psycopg_pool.ConnectionPool``, which is borrowed, never
    closed. ``table`` is a table name, or a model: a SQLAlchemy ``Table`` or mapped class, or a
    Django model class; a model sink takes the model's instances as rows, and gives a column a
    row leaves out the model's Python-side default (see prepare()). ``key`` names the conflict
    target: a column, or several, covered exactly by the primary key or a unique index; for a
    model it defaults to the primary key, for a table name it must be given (``key=None``:
    append-only, plain INSERTs). ``columns`` picks the written columns (the key is always
    written); by default every column without a default value. ``schema`` qualifies ``table``,
    which is otherwise found along the search_path. ``naive_timezone`` (a zone name or tzinfo)
    is given to naive datetimes for ``timestamptz`` columns, which are refused without it.
    ``connect_timeout`` bounds one wait for a connection: past it the write fails as
    transient, and the queue retries it. ``write_timeout`` bounds one write: it is cancelled
    (a cancel request, as ``statement_timeout`` would) and, on TCP, keepalives and
    ``tcp_user_timeout`` drop a connection whose server or network stops answering; a write
    that runs out fails as transient and is retried.

    ``method`` says how a batch is sent: ``"unnest"``, one ``INSERT ... SELECT FROM unnest``
    of binary arrays per batch; ``"copy"``, a binary COPY into a temporary table made in the
    transaction, then one ``INSERT ... SELECT``; ``"executemany"``, one prepared INSERT per
    row; ``"auto"`` (default), unnest for small batches and copy for large ones. The first
    two leave nothing on the server connection, so they work through PgBouncer in
    transaction mode; executemany prepares statements there.

    Sinks of one process with the same conninfo (and timeouts) share one pool, which opens at
    most ``pool_size`` connections (the largest asked), one per sink writing at the same
    time, and none while idle. A pool passed in is borrowed as it is.

    Nothing connects before open() (called by the queue's worker), so a sink can be built
    before a server forks. open() reads the catalog over one connection of its own and raises
    SchemaError for a missing table, a key without a unique index or an unknown column.

    Told to ``track_progress()`` (by a queue with a journal), the sink also keeps the table
    ``writebehind_progress`` in the target table's schema: each write records the journal
    progress it is given in the transaction of its rows (see write()).
    """

    def __init__(
        self,
        conninfo_or_pool: str | ConnectionPool[Any],
        table: str | Any,
        key: str | Sequence[str] | None = PRIMARY_KEY,
        *,
        columns: Sequence[str] | None = None,
        schema: str | None = None,
        on_conflict: str = "update",
        update_columns: Sequence[str] | None = None,
        version_column: str | None = None,
        merge: Mapping[str, str] | None = None,
        method: str = "auto",
        connect_timeout: float = 5.0,
        write_timeout: float = 30.0,
        pool_size: int = 4,
        naive_timezone: str | tzinfo | None = None,
    ) -> None:
        if not isinstance(conninfo_or_pool, (str, ConnectionPool)):
            raise TypeError("conninfo_or_pool must be a conninfo string or a ConnectionPool")
        if isinstance(conninfo_or_pool, str):
            problem = conninfo_problem(conninfo_or_pool)  # here rather than at open
            if problem is not None:
                raise ValueError(f"conninfo_or_pool: {problem}")
        model = describe(table)  # TypeError for what is neither a name nor a model
        self.model: ModelTable | None = model
        """The model ``table`` was given as (None: a table name)."""
        if model is None:
            if key is PRIMARY_KEY:
                raise TypeError(
                    f"PostgresUpsert({table!r}) needs key=: the column(s) of a unique index to "
                    "upsert on, or key=None to append every row (a model or SQLAlchemy Table "
                    "brings its primary key)"
                )
            self.table = _check_name("table", table)
        else:
            self.table = model.table
            if schema is None:
                schema = model.schema
            if key is PRIMARY_KEY:
                key = model.primary_key
        self.schema = None if schema is None else _check_name("schema", schema)
        self.key: tuple[str, ...] = (
            () if key is None else _check_names("key", [key] if isinstance(key, str) else key)
        )
        self._model_rows: ModelRows | None = None
        """A model's rows, by the columns the sink writes (set when it opens)."""
        self._unopened_rows: ModelRows | None = None
        """A model's rows before the sink opens, by the columns the model says it writes."""
        self.columns = None if columns is None else _check_names("columns", columns)
        self.on_conflict = on_conflict
        self.update_columns = (
            None if update_columns is None else _check_names("update_columns", update_columns)
        )
        self.version_column = (
            None if version_column is None else _check_name("version_column", version_column)
        )
        if merge is not None and not isinstance(merge, Mapping):
            raise TypeError(f"merge must be a dict of column -> 'add'|'max'|'min', got {merge!r}")
        self.merge: dict[str, str] = dict(merge or {})
        _check_conflict_options(self)
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, got {type(method).__name__} {method!r}")
        if method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}"
            )
        self.method = method
        self._conninfo = conninfo_or_pool if isinstance(conninfo_or_pool, str) else None
        self._pool: ConnectionPool[Any] | None = (
            None if isinstance(conninfo_or_pool, str) else conninfo_or_pool
        )
        self.connect_timeout = _check_timeout("connect_timeout", connect_timeout)
        self.write_timeout = _check_timeout("write_timeout", write_timeout)
        self.pool_size = _check_pool_size(pool_size)
        self._shared: SharedPool | None = None
        self._cut_after = cut_after(self.write_timeout)
        self._what = f"a write to {self.table!r}"
        self.naive_timezone = _check_timezone(naive_timezone)
        self._lock = threading.Lock()
        self._opened = False
        self._writes: set[watchdog.Bound] = set()
        self._concurrent_writes = 1
        # Set by open(): the layout of the written columns (what prepare() needs, the
        # statements), the catalog it was read from, and layouts for journaled rows.
        self._layout: Layout | None = None
        self._info: TableInfo | None = None
        self._targets: dict[tuple[str, ...], Target] = {}
        self._prepare: Callable[[Mapping[str, Any]], tuple[Hashable, Params]] = _unopened
        self.records_progress = False
        """Whether open() keeps the progress table (set by track_progress())."""
        self._progress: ProgressTable | None = None

    def track_progress(self) -> None:
        """Record journal progress: from the next open() (or configure()), the sink makes sure
        the progress table exists, and write() takes ``progress`` marks. Called by a queue
        with a journal before it opens the sink."""
        self.records_progress = True

    @property
    def name(self) -> str:
        """The table name: the default name of a queue over this sink."""
        return self.table

    @property
    def written_columns(self) -> tuple[str, ...]:
        """Columns each row must give, in table order (empty until the sink opens)."""
        return () if self._layout is None else self._layout.names

    def open(self) -> None:
        """Read the table's catalog, build the upsert statement and take a pool.

        Idempotent and thread-safe. Makes one connection attempt (bounded by
        ``connect_timeout``) and raises what it met: SchemaError for an unusable table, key or
        column, or the psycopg error naming why the database could not be reached or refused
        the connection.

        After track_progress(), it also creates the progress table ``writebehind_progress``
        in the target table's schema if it is missing (several processes may race to: that is
        fine), and raises SchemaError if it cannot (giving the CREATE TABLE and GRANT to run
        as a role that may), if the table has other columns, or if this role lacks SELECT,
        INSERT, UPDATE or DELETE on it.
        """
        with self._lock:
            if self._opened:
                return
            for logger_name in ("psycopg", "psycopg.pool"):
                psycopg_logger = logging.getLogger(logger_name)
                if _psycopg_noise not in psycopg_logger.filters:
                    psycopg_logger.addFilter(_psycopg_noise)
            connection: AbstractContextManager[psycopg.Connection[Any]]
            if self._conninfo is not None:
                options = connection_options(self._conninfo, self.write_timeout)
                connection = direct_connection(
                    self._conninfo,
                    self.pool_size,
                    self.connect_timeout,
                    options,
                    read_sqlstate=True,  # the SQLSTATE tells a refused login from an outage
                )
            else:
                connection = self._borrowed_connection()
            with connection as conn, self._bound(conn, f"reading the catalog of {self.table!r}"):
                info = read_table(conn, self.table, self.schema)
                progress = self._progress_table(conn, info, own=True)
            self._configure_from(info, progress)
            if self._conninfo is not None:
                self._shared = acquire(
                    self._conninfo,
                    connect_timeout=self.connect_timeout,
                    write_timeout=self.write_timeout,
                    pool_size=self.pool_size,
                    writers=self._concurrent_writes,
                )
            self._opened = True

    def _progress_table(
        self, conn: psycopg.Connection[Any], info: TableInfo, *, own: bool
    ) -> ProgressTable | None:
        """The progress table beside the target table, made sure of, if progress is tracked.
        ``own``: the connection is the sink's, and its catalog read can end here, so that a
        table created now is committed at once, for the processes racing to create it."""
        if not self.records_progress:
            return None
        progress = ProgressTable(info.schema)
        if own:
            conn.commit()
            with _autocommit(conn):
                progress.ensure(conn)
        else:
            progress.ensure(conn)
        return progress

    def _rules(self) -> Rules:
        return Rules(
            self.table,
            self.key,
            self.columns,
            self.on_conflict,
            self.update_columns,
            self.version_column,
            tuple(self.merge.items()),
            self.method,
            self.naive_timezone,
        )

    def _configure_from(self, info: TableInfo, progress: ProgressTable | None = None) -> None:
        """Check the table, key and columns against the catalog (SchemaError) and get ready."""
        layout = of_sink(info, self._rules(), progress)
        self._progress = progress
        self._info, self._layout, self._targets = info, layout, {}
        self._prepare = layout.prepare
        if self.model is not None:
            self._model_rows = ModelRows(self.model, layout.names, self.key)
            self._prepare = self._model_rows.preparer(layout.prepare)

    @property
    def replaces(self) -> Replaces | None:
        """Which row of a key a batch keeps (None: the last put); set when the sink opens."""
        return None if self._layout is None else self._layout.replaces

    @property
    def merger(self) -> Merger | None:
        """How the rows of one key combine in a batch (with ``merge``); set when it opens."""
        return None if self._layout is None else self._layout.merger

    @property
    def layout(self) -> RowLayout | None:
        """The written columns as plain data (None until the sink opens): what a journal
        keeps with each row."""
        return None if self._layout is None else self._layout.row_layout

    def prepare(self, row: Mapping[str, Any] | Any) -> tuple[Hashable, Params]:
        """Check ``row`` against the written columns; return its key and parameters.

        For a model sink ``row`` may also be an instance of the model (its columns by column
        name, a Django ForeignKey as ``site_id``; unset ones left out), and a written column it
        leaves out gets the model's Python-side default, made now: SQLAlchemy's
        ``Column(default=...)``, Django's ``default=``, ``auto_now``/``auto_now_add`` (an
        aware now). Columns the database fills (server defaults, identity) are not written
        unless ``columns`` names them. TypeError for an instance of another class; ValueError
        for an instance whose key is unset and generated by the database (an upsert needs
        its key: use a natural key, or ``key=None``).

        TypeError if ``row`` is not a Mapping, a key value is unhashable or a json value cannot
        be serialized; ValueError naming missing or unknown columns, a naive datetime for a
        ``timestamptz`` column (PostgreSQL would read it in the session time zone), a str for a
        json column that is not JSON text, or NaN or Infinity in a json value.
        """
        return self._prepare(row)

    def as_row(self, value: Any) -> Mapping[str, Any]:
        """``value`` as put() keeps it: a Mapping as it is, an instance of the model as the
        Mapping of its columns, the defaults made for those it leaves unset (see prepare()).
        Before the sink is open, the columns are those it will write by the model: ``columns``
        and the key, or every column the database does not fill. TypeError for other
        objects, ValueError for columns an instance read from the database has not loaded."""
        if type(value) is dict or isinstance(value, Mapping):
            return value
        model = self.model
        if model is None:
            raise TypeError(f"row must be a Mapping of column -> value, got {type(value).__name__}")
        rows = self._model_rows
        if rows is None:  # not open yet: the columns it will write, as the model says
            rows = self._unopened_rows
            if rows is None:
                written = (
                    (*self.key, *(c for c in self.columns if c not in self.key))
                    if self.columns is not None
                    else tuple(
                        c for c in model.columns if c in self.key or c not in model.generated
                    )
                )
                rows = self._unopened_rows = ModelRows(model, written, self.key)
        return rows.row(value)

    def key_row(self, key: Any) -> dict[str, Any]:
        """The Mapping of the key columns that ``key`` names, for a delete: a scalar (a
        one-column key), a tuple (a composite one, in key order), a Mapping holding the key
        columns (and the version column, with one), or an instance of the model. TypeError
        for an append-only sink, ValueError for a key of another length."""
        names = self.key
        if not names:
            raise TypeError(
                f"{self.table!r} is written append-only (key=None): there is no key to delete by"
            )
        if isinstance(key, Mapping):
            return dict(key)
        if self.model is not None and self.model.is_instance(key):
            values = self.model.row_of(key)
            unset = [name for name in names if name not in values]
            if unset:
                raise ValueError(
                    f"this {self.model.name} has no key to delete by: "
                    f"{', '.join(map(repr, unset))} not set"
                )
            wanted = (*names, *filter(None, [self.version_column]))
            return {name: values[name] for name in wanted if name in values}
        foreign = foreign_instance(key)
        if foreign is not None:
            accepted = f"an instance of {self.model.name}, " if self.model is not None else ""
            raise TypeError(
                f"a delete from {self.table!r} takes {accepted}a key value, a tuple or a "
                f"Mapping of the key columns, got {foreign}"
            )
        if len(names) == 1:
            if isinstance(key, tuple) and len(key) == 1:
                key = key[0]
            return {names[0]: key}
        if not isinstance(key, tuple) or len(key) != len(names):
            raise ValueError(
                f"the key of {self.table!r} has {len(names)} columns {list(names)}: give a "
                f"tuple of {len(names)} values or a Mapping, got {key!r}"
            )
        return dict(zip(names, key, strict=True))

    def prepare_delete(self, row: Mapping[str, Any]) -> tuple[Hashable, Deletion]:
        """Check a delete: ``row`` is the Mapping of the key columns (key_row() makes one),
        with the version column for a sink with ``version_column`` (the delete applies only
        to a row of a lower version); return its key, as prepare() returns an upsert's, and
        its params. TypeError for an append-only sink; ValueError naming a missing or
        unknown column, or a None in the key."""
        layout = self._layout
        if layout is None:
            raise ValueError("the sink is not open; call open() (the queue does at its first put)")
        return layout.prepare_delete(row)

    def target_for(self, columns: Sequence[str]) -> Target:
        """Where rows of ``columns`` (names, any order) are written: this sink if they are its
        written columns, else the same table written with those columns, by the same rules,
        for rows a journal kept from a process with other ``columns=`` or another table.
        SchemaError naming the column if such rows cannot be written: one the table does not
        have, or a NOT NULL one without a default (or the key) that they lack."""
        layout, info = self._layout, self._info
        if layout is None or info is None:
            raise RuntimeError("the sink is not open; call open() first")
        wanted = tuple(sorted(columns))
        if frozenset(wanted) == layout.name_set:
            return self
        with self._lock:
            target = self._targets.get(wanted)
            if target is None:
                target = _Journaled(self, journaled(info, self._rules(), self._progress, wanted))
                if len(self._targets) < 64:
                    self._targets[wanted] = target
            return target

    def configure(self, conn: psycopg.Connection[Any]) -> None:
        """Read the catalog through ``conn`` (a connection of the caller's, left open) and get
        ready to prepare rows; raises SchemaError as open() does. For writing through
        ``write_on`` without a pool of the sink's own. After track_progress(), makes sure of
        the progress table as open() does, in a savepoint if a transaction is open on
        ``conn`` (a table created then commits with the caller's transaction)."""
        info = read_table(conn, self.table, self.schema)
        progress = self._progress_table(conn, info, own=False)
        with self._lock:
            self._configure_from(info, progress)

    def write_on(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Params],
        progress: Sequence[ProgressMark] = (),
    ) -> None:
        """Upsert ``rows`` (distinct keys, from prepare()) and record the ``progress`` marks
        (as write() does) on ``conn``, inside whatever transaction the caller has open there:
        neither commits nor rolls back."""
        assert self._layout is not None, "open() or configure() the sink first"
        table = self._progress_for(progress)
        with conn.cursor() as cur:
            execute_each(cur, self._layout.query, self._layout.delete_query, rows)
        if table is not None:
            with _conflicts_raised():
                write_progress(conn, table, progress)

    def unwritable_columns(self) -> list[str]:
        """Once open (or configured): why no row could be inserted, one message per NOT NULL
        column without a default that the sink does not write (``columns`` left it out);
        empty when rows can be (a trigger filling such a column is not seen)."""
        info, layout = self._info, self._layout
        if info is None or layout is None:
            raise RuntimeError("the sink is not open; call open() first")
        return [
            f"column {column.name!r} of {info.qualified_name} is NOT NULL without a default, "
            f"and columns={list(self.columns or ())} leaves it out: every row would be refused"
            for column in info.columns
            if column.not_null
            and not column.has_default
            and not column.generated
            and column.name not in layout.name_set
        ]

    def deferred_checked(self, conn: psycopg.Connection[Any]) -> AbstractContextManager[None]:
        """Around write_on() in a savepoint of the caller's transaction on ``conn``: after it,
        check the deferrable constraints of the table (and of tables referencing it) now,
        which would otherwise wait for COMMIT, so that a row refused by a deferred foreign
        key is refused there; those initially deferred are deferred again. When what the
        caller had pending already fails them, the row is left to COMMIT instead."""
        assert self._info is not None, "open() or configure() the sink first"
        return deferred_checked(conn, self._info.schema, self._info.name)

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        """Upsert ``rows`` (distinct keys) in one transaction, within ``write_timeout``;
        ``Deletion`` params among them (from prepare_delete()) delete their key instead.

        ``progress`` (after track_progress()): marks ``(source, applied_seq, applied_extra)``
        with distinct sources, each upserted into the progress table in the same transaction
        (in the same statement, for unnest and copy), so that the progress recorded is
        exactly what the table holds: a write that fails leaves both as they were. With no
        rows, only the marks are written. TypeError or ValueError, naming ``progress``, for
        marks that are malformed or out of bigint's range, or given to a sink that does not
        track progress.
        """
        assert self._layout is not None, "open() the sink first"
        self._write_with(self._layout.writer, rows, progress)

    def _write_with(
        self, writer: Writer, rows: Sequence[Params], progress: Sequence[ProgressMark]
    ) -> None:
        table = self._progress_for(progress)
        if not rows and table is None:
            return
        with (
            self._bounded_connection(self._what) as conn,
            _doubt_raised(conn),
            _conflicts_raised(),
        ):
            if rows:
                writer.write(conn, rows, progress)
            else:
                assert table is not None
                write_progress(conn, table, progress)

    def _progress_for(self, progress: Sequence[ProgressMark]) -> ProgressTable | None:
        """The progress table to record ``progress`` in, None for no marks; checks them."""
        if isinstance(progress, tuple) and not progress:
            return None  # the common case, without a journal: nothing to check
        marks = check_marks(progress)
        if not marks:
            return None
        if self._progress is None:
            raise ValueError(
                "progress marks given to a sink that does not record progress: call "
                "track_progress() before open() (or configure())"
            )
        return self._progress

    def read_progress(self, prefix: str) -> dict[str, tuple[int, frozenset[int]]]:
        """The progress recorded for every journal whose name starts with ``prefix`` (taken
        as it is: ``%`` and ``_`` are no wildcards): ``{journal: (applied_seq,
        frozenset(applied_extra))}``. One short transaction on a connection of the sink's
        pool, bounded as a write is; raises what psycopg raises (the caller retries)."""
        prefix = check_prefix(prefix)
        table = self._tracked()
        with self._bounded_connection(f"reading the progress of {self.table!r}") as conn:
            return table.read(conn, prefix)

    def claim_progress(
        self, prefix: str, sources: Sequence[str], owner: str
    ) -> dict[str, tuple[int, frozenset[int]]]:
        """Make ``owner`` (the instance replaying a dead one's journal) the owner of the
        progress of ``sources`` (made at zero where missing) and of every journal whose name
        starts with ``prefix``, and return their progress as read_progress() does, in one
        transaction. A write of the dead process still running on the server is waited for if
        it got to its progress first, and refused (it cannot commit) if not."""
        prefix = check_prefix(prefix)
        table = self._tracked()
        with self._bounded_connection(f"reading the progress of {self.table!r}") as conn:
            return table.claim(conn, prefix, list(sources), owner)

    def forget_progress(self, prefix: str) -> int:
        """Delete the progress of every journal whose name starts with ``prefix`` (as
        read_progress() matches it); return how many were deleted."""
        prefix = check_prefix(prefix)
        table = self._tracked()
        with self._bounded_connection(f"reading the progress of {self.table!r}") as conn:
            return table.forget(conn, prefix)

    def _tracked(self) -> ProgressTable:
        if not self._opened or self._layout is None:
            raise RuntimeError("the sink is not open; call open() first")
        if self._progress is None:
            raise RuntimeError("the sink does not record progress: call track_progress() first")
        return self._progress

    @contextmanager
    def _bounded_connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the sink's, in autocommit, for ``what``: cancelled at
        ``write_timeout`` (past a grace period its connection is cut, should the server have
        stopped answering altogether), and by interrupt()."""
        with self._connection() as conn, _autocommit(conn), self._bound(conn, what) as bound:
            self._writes.add(bound)
            try:
                yield conn
            finally:
                self._writes.discard(bound)

    def _bound(
        self, conn: psycopg.Connection[Any], what: str
    ) -> AbstractContextManager[watchdog.Bound]:
        """Every wait on the server under ``write_timeout``: cancelled then, and its connection
        cut a grace period later (a server that stopped answering)."""
        return watchdog.bounded(
            conn,
            what,
            cancel_after=self.write_timeout,
            cut_after=self._cut_after,
            cancel_timeout=min(self.connect_timeout, 5.0),
        )

    def interrupt(self) -> None:
        """Cancel the writes under way (they fail with QueryCanceled): the queue's exit
        deadline has passed."""
        for bound in list(self._writes):
            bound.interrupt()

    def after_fork(self) -> None:
        """In a child forked from the process that opened this sink: forget the parent's
        pool (its connections are the parent's, never used or closed here) and its locks.
        The catalog read stays valid; the next write takes a pool of this process's own."""
        self._lock = threading.Lock()
        self._writes = set()
        self._shared = None

    def _connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        shared = self._shared
        if shared is None and self._conninfo is not None and self._opened:
            shared = self._shared = acquire(  # after a fork
                self._conninfo,
                connect_timeout=self.connect_timeout,
                write_timeout=self.write_timeout,
                pool_size=self.pool_size,
                writers=self._concurrent_writes,
            )
        if shared is not None:
            return shared.connection()
        return self._borrowed_connection()

    def _borrowed_connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        assert self._pool is not None
        return pooled(self._pool, self.connect_timeout)

    def close(self) -> None:
        """Let the shared pool go (closed with its last sink); a borrowed one stays open.
        Idempotent."""
        with self._lock:
            shared, self._shared, self._opened = self._shared, None, False
        if shared is not None:
            release(shared, self.pool_size, self._concurrent_writes)

    def expect_writers(self, writers: int) -> None:
        """Ready the pool for ``writers`` threads writing at once (a queue's ``writers``);
        before open(). ValueError beyond ``pool_size``."""
        if writers > self.pool_size:
            raise ValueError(
                f"writers={writers} needs a sink with pool_size >= {writers} "
                f"(one connection per writer), got pool_size={self.pool_size}"
            )
        self._concurrent_writes = writers


def _check_conflict_options(sink: PostgresUpsert) -> None:
    if sink.on_conflict not in ("update", "ignore"):
        raise ValueError(f"on_conflict must be 'update' or 'ignore', got {sink.on_conflict!r}")
    if not sink.key and (
        sink.on_conflict != "update" or sink.update_columns or sink.version_column
    ):
        raise ValueError(
            "key=None writes plain INSERTs: on_conflict, update_columns and version_column "
            "need a key"
        )
    if sink.on_conflict == "ignore" and (sink.update_columns or sink.version_column or sink.merge):
        raise ValueError(
            "on_conflict='ignore' updates nothing: drop update_columns/version_column/merge"
        )
    if not sink.key and sink.merge:
        raise ValueError("key=None writes plain INSERTs: merge needs a key")
    for name, how in sink.merge.items():
        if how not in ("add", "max", "min"):
            raise ValueError(f"merge[{name!r}] must be 'add', 'max' or 'min', got {how!r}")
        if sink.update_columns is not None and name not in sink.update_columns:
            raise ValueError(f"merge column {name!r} must be among update_columns")
    if sink.merge and sink.version_column is not None:
        raise ValueError("merge and version_column do not combine: a merge has no older value")
    for name in (*(sink.update_columns or ()), *sink.merge, *filter(None, [sink.version_column])):
        if name in sink.key:
            raise ValueError(f"{name!r} is a key column: an update cannot set it")
    if (
        sink.version_column is not None
        and sink.update_columns is not None
        and sink.version_column not in sink.update_columns
    ):
        raise ValueError(
            f"version_column {sink.version_column!r} must be among update_columns, "
            "or the version would never move"
        )


def _unopened(row: Mapping[str, Any]) -> tuple[Hashable, Params]:
    if not isinstance(row, Mapping):
        raise TypeError(f"row must be a Mapping of column -> value, got {type(row).__name__}")
    raise ValueError("the sink is not open; call open() (the queue does at its first put)")


@contextmanager
def _autocommit(conn: psycopg.Connection[Any]) -> Iterator[None]:
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


@contextmanager
def _doubt_raised(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A write whose connection is lost once it got as far as committing fails as
    CommitInDoubt: the server may have committed it."""
    commit_was_sent(conn, reset=True)
    try:
        yield
    except psycopg.OperationalError as error:
        if commit_was_sent(conn) and connection_lost(error):
            raise CommitInDoubt(
                "the connection was lost after COMMIT was sent: the rows may or may not have "
                f"been written ({_first_line(error)})"
            ) from error
        raise


@contextmanager
def _conflicts_raised() -> Iterator[None]:
    """A write whose progress marks did not match fails as ProgressConflict."""
    try:
        yield
    except psycopg.errors.InvalidTextRepresentation as error:
        if is_conflict(error):
            raise ProgressConflict(
                "the journal's progress did not hold what the write expected (another "
                "process, or an earlier attempt whose reply was lost, moved it); nothing was "
                f"written: {error}"
            ) from None
        raise


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _check_pool_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"pool_size must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"pool_size must be at least 1, got {value}")
    return value


def _check_timezone(value: object) -> tzinfo | None:
    if value is None or isinstance(value, tzinfo):
        return value
    if not isinstance(value, str):
        raise TypeError(f"naive_timezone must be a time zone name or a tzinfo, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"naive_timezone: unknown time zone {value!r}") from None


def _check_name(argument: str, value: object) -> str:
    if not isinstance(value, str):
        kinds = KINDS if argument == "table" else "a non-empty string"
        raise TypeError(f"{argument} must be {kinds}, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{argument} must be a non-empty string, got {value!r}")
    return value


def _check_names(argument: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{argument} must be a sequence of column names, got {values!r}")
    if not values:
        raise ValueError(f"{argument} must be a non-empty sequence of column names")
    names = tuple(_check_name(argument, value) for value in values)
    if len(set(names)) != len(names):
        raise ValueError(f"{argument} names a column twice: {list(names)}")
    return names


def _check_timeout(argument: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{argument} must be a number of seconds, got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argument} must be a positive finite number of seconds, got {value!r}")
    return float(value)


class _Journaled:
    """The sink's table written with other columns: rows replayed from a journal that kept
    other ones (a Target)."""

    def __init__(self, sink: PostgresUpsert, layout: Layout) -> None:
        self._sink = sink
        self._layout = layout
        self.prepare = layout.prepare
        self.replaces = layout.replaces
        self.merger = layout.merger
        self.written_columns = layout.names

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        self._sink._write_with(self._layout.writer, rows, progress)

    def __repr__(self) -> str:
        return f"<{self._sink.table!r} written as {list(self._layout.names)}>"
