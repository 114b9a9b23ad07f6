"""PostgresUpsert: writes batches with INSERT ... ON CONFLICT ... DO UPDATE.

The sink's face: what it is given is checked by ``configuration``, its connections are held by
``connections``, what callers hand it becomes rows in ``row_values`` and ``layout``, and a batch
is sent by ``methods`` in the transaction ``writing`` makes of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import tzinfo
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from .._sink import Deletion, Merger, Params, ProgressMark, Replaces, RowLayout, Target
from ..models import ModelTable, describe
from ..models._rows import ModelRows
from .catalog import TableInfo, read_table, unwritable
from .configuration import (
    PRIMARY_KEY,
    check_conflict_options,
    check_conninfo_or_pool,
    check_merge,
    check_method,
    check_name,
    check_names,
    check_pool_size,
    check_timeout,
    check_timezone,
    table_schema_key,
)
from .connections import SinkConnections
from .conninfo import without_secrets
from .deferred import deferred_checked
from .layout import Layout, Rules, journaled, of_sink
from .methods import Writer
from .pools import SharedPool
from .progress import ProgressTable, check_prefix, ensured, recorded_in
from .psycopg_noise import quiet_psycopg
from .row_values import key_row, unopened, unopened_rows
from .targets import Journaled
from .writing import write_batch, write_within

__all__ = ["PRIMARY_KEY", "PostgresUpsert"]


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
        check_conninfo_or_pool(conninfo_or_pool)
        model = describe(table)  # TypeError for what is neither a name nor a model
        self.model: ModelTable | None = model
        """The model ``table`` was given as (None: a table name)."""
        table_name, schema_name, key_columns = table_schema_key(model, table, key, schema)
        self.table = table_name
        self.schema = schema_name
        self.key: tuple[str, ...] = key_columns
        self._model_rows: ModelRows | None = None
        """A model's rows, by the columns the sink writes (set when it opens)."""
        self._unopened_rows: ModelRows | None = None
        """A model's rows before the sink opens, by the columns the model says it writes."""
        self.columns = None if columns is None else check_names("columns", columns)
        self.on_conflict = on_conflict
        self.update_columns = (
            None if update_columns is None else check_names("update_columns", update_columns)
        )
        self.version_column = (
            None if version_column is None else check_name("version_column", version_column)
        )
        self.merge: dict[str, str] = check_merge(merge)
        check_conflict_options(
            self.key, self.on_conflict, self.update_columns, self.version_column, self.merge
        )
        self.method = check_method(method)
        self.connect_timeout = check_timeout("connect_timeout", connect_timeout)
        self.write_timeout = check_timeout("write_timeout", write_timeout)
        self.pool_size = check_pool_size(pool_size)
        self._connections = SinkConnections(
            conninfo_or_pool,
            connect_timeout=self.connect_timeout,
            write_timeout=self.write_timeout,
            pool_size=self.pool_size,
        )
        self._what = f"a write to {self.table!r}"
        self.naive_timezone = check_timezone(naive_timezone)
        self._lock = threading.Lock()
        self._opened = False
        # Set by open(): the layout of the written columns (what prepare() needs, the
        # statements), the catalog it was read from, and layouts for journaled rows.
        self._layout: Layout | None = None
        self._info: TableInfo | None = None
        self._targets: dict[tuple[str, ...], Target] = {}
        self._prepare: Callable[[Mapping[str, Any]], tuple[Hashable, Params]] = unopened
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

    def __repr__(self) -> str:
        conninfo = self._connections.conninfo
        where = "through a pool" if conninfo is None else f"on {without_secrets(conninfo)!r}"
        return f"<PostgresUpsert {self.table!r} {where}>"  # never a password: it may be logged

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
            quiet_psycopg()
            connections = self._connections
            with (
                connections.for_catalog() as conn,
                connections.bound(conn, f"reading the catalog of {self.table!r}"),
            ):
                info = read_table(conn, self.table, self.schema)
                progress = self._progress_table(conn, info, own=True)
            self._configure_from(info, progress)
            connections.take_pool()
            self._opened = True

    def _progress_table(
        self, conn: psycopg.Connection[Any], info: TableInfo, *, own: bool
    ) -> ProgressTable | None:
        """The progress table beside the target table, made sure of (see ensured()), if
        progress is tracked."""
        if not self.records_progress:
            return None
        return ensured(conn, info.schema, own=own)

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
                rows = self._unopened_rows = unopened_rows(model, self.key, self.columns)
        return rows.row(value)

    def key_row(self, key: Any) -> dict[str, Any]:
        """The Mapping of the key columns that ``key`` names, for a delete: a scalar (a
        one-column key), a tuple (a composite one, in key order), a Mapping holding the key
        columns (and the version column, with one), or an instance of the model. TypeError
        for an append-only sink, ValueError for a key of another length."""
        return key_row(self.table, self.key, self.model, self.version_column, key)

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
                layout = journaled(info, self._rules(), self._progress, wanted)
                target = Journaled(self.table, self._write_with, layout)
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
        table = recorded_in(progress, self._progress)
        write_within(conn, self._layout, rows, progress, table)

    def unwritable_columns(self) -> list[str]:
        """Once open (or configured): why no row could be inserted, one message per NOT NULL
        column without a default that the sink does not write (``columns`` left it out);
        empty when rows can be (a trigger filling such a column is not seen)."""
        info, layout = self._info, self._layout
        if info is None or layout is None:
            raise RuntimeError("the sink is not open; call open() first")
        return unwritable(info, layout.name_set, self.columns)

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
        table = recorded_in(progress, self._progress)
        if rows or table is not None:
            write_batch(self._connections.bounded(self._what), writer, rows, progress, table)

    def read_progress(self, prefix: str) -> dict[str, tuple[int, frozenset[int]]]:
        """The progress recorded for every journal whose name starts with ``prefix`` (taken
        as it is: ``%`` and ``_`` are no wildcards): ``{journal: (applied_seq,
        frozenset(applied_extra))}``. One short transaction on a connection of the sink's
        pool, bounded as a write is; raises what psycopg raises (the caller retries)."""
        prefix = check_prefix(prefix)
        table = self._tracked()
        with self._connections.bounded(f"reading the progress of {self.table!r}") as conn:
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
        with self._connections.bounded(f"reading the progress of {self.table!r}") as conn:
            return table.claim(conn, prefix, list(sources), owner)

    def forget_progress(self, prefix: str) -> int:
        """Delete the progress of every journal whose name starts with ``prefix`` (as
        read_progress() matches it); return how many were deleted."""
        prefix = check_prefix(prefix)
        table = self._tracked()
        with self._connections.bounded(f"reading the progress of {self.table!r}") as conn:
            return table.forget(conn, prefix)

    def _tracked(self) -> ProgressTable:
        if not self._opened or self._layout is None:
            raise RuntimeError("the sink is not open; call open() first")
        if self._progress is None:
            raise RuntimeError("the sink does not record progress: call track_progress() first")
        return self._progress

    def interrupt(self) -> None:
        """Cancel the writes under way (they fail with QueryCanceled): the queue's exit
        deadline has passed."""
        self._connections.interrupt()

    def after_fork(self) -> None:
        """In a child forked from the process that opened this sink: forget the parent's
        pool (its connections are the parent's, never used or closed here) and its locks.
        The catalog read stays valid; the next write takes a pool of this process's own."""
        self._lock = threading.Lock()
        self._connections.after_fork()

    @property
    def _shared(self) -> SharedPool | None:
        """The process's pool the sink writes through (None: borrowed, or not taken yet)."""
        return self._connections.shared

    def close(self) -> None:
        """Let the shared pool go (closed with its last sink); a borrowed one stays open.
        Idempotent."""
        with self._lock:
            self._opened = False
            shared = self._connections.detach()
        self._connections.release(shared)

    def expect_writers(self, writers: int) -> None:
        """Ready the pool for ``writers`` threads writing at once (a queue's ``writers``);
        before open(). ValueError beyond ``pool_size``."""
        if writers > self.pool_size:
            raise ValueError(
                f"writers={writers} needs a sink with pool_size >= {writers} "
                f"(one connection per writer), got pool_size={self.pool_size}"
            )
        self._connections.writers = writers
