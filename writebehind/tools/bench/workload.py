"""The rows every benchmark writes, the table they go to, and the check that a run wrote them.

A 9-column table of ~350-byte rows with a jsonb column, keyed by ``id``. Each run writes the
same rows (``NEW_PREFIX`` values); on the update path the table first holds the same keys with
other values (``OLD_PREFIX``), on the insert path it starts empty.

Every run starts from the same table state: before each one the table is dropped and created
again, its old rows (if any) loaded by COPY, vacuumed and analyzed, and a CHECKPOINT taken
(where the role may). VACUUM alone between runs is not enough: the space it frees lets later
updates stay on their page (HOT updates: no new index entry), so each run would inherit a table
shaped by the runs before it, and the share of HOT updates grows from run to run (1% in the
first run, 11% in the sixth, in one measurement at batch 500): whoever runs later is favoured.
The CHECKPOINT makes every run pay the same full-page writes, and puts the next checkpoint
minutes away rather than inside a run. Autovacuum is off for the table so that it cannot wake
during a run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

__all__ = [
    "COLUMNS",
    "COLUMN_TYPES",
    "CheckFailed",
    "Fingerprint",
    "Workload",
    "as_params",
    "fingerprint",
    "make_rows",
    "new_rows",
    "rebuild",
    "upsert_statement",
]

COLUMNS = ("id", "name", "email", "city", "score", "ratio", "active", "updated", "attrs")
COLUMN_TYPES = (
    "bigint",
    "text",
    "text",
    "text",
    "integer",
    "double precision",
    "boolean",
    "timestamptz",
    "jsonb",
)
KEY = "id"
NEW_PREFIX = "user-"  # the value every run writes
OLD_PREFIX = "old-"  # the value loaded before an update run: a row still holding it was not written
PATHS = ("insert", "update")


class CheckFailed(Exception):
    """A run left the table without every row holding the value written last, or gave rows up."""


@dataclass(frozen=True)
class Fingerprint:
    """What the table holds: row count, sum of ``score``, md5 of every row in key order."""

    rows: int
    score_sum: int
    md5: str

    def __str__(self) -> str:
        return f"{self.rows} rows, score sum {self.score_sum}, md5 {self.md5}"


def make_rows(count: int, seed: int, prefix: str, updated: datetime) -> list[dict[str, Any]]:
    """``count`` rows with keys 0..count-1; every column but the key depends on ``seed``."""
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "name": f"{prefix}{i}-{rng.randrange(10**6)}",
            "email": f"{prefix}{i}@example.org",
            "city": rng.choice(["Lisbon", "Oslo", "Quito", "Osaka", "Accra"]),
            "score": rng.randrange(10**6),
            "ratio": rng.random(),
            "active": rng.random() < 0.5,
            "updated": updated,
            "attrs": {
                "plan": rng.choice(["free", "pro", "team"]),
                "tags": [rng.randrange(100) for _ in range(8)],
                "note": "x" * rng.randrange(60, 120),
                "visits": rng.randrange(1000),
            },
        }
        for i in range(count)
    ]


def new_rows(count: int, updated: datetime) -> list[dict[str, Any]]:
    """The rows every run writes (the same in every process given the same ``updated``)."""
    return make_rows(count, seed=1, prefix=NEW_PREFIX, updated=updated)


_as_tuple = itemgetter(*COLUMNS)


def as_params(rows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The rows as parameter lists in COLUMNS order, the jsonb column wrapped."""
    params = []
    for row in rows:
        values = list(_as_tuple(row))
        values[-1] = Jsonb(values[-1])
        params.append(values)
    return params


def _set_list() -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in COLUMNS
        if c != KEY
    )


def _column_list() -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, COLUMNS))


def upsert_statement(table: str, source: str | None = None) -> sql.Composed:
    """The upsert both sides run: ``INSERT ... VALUES (%s, ...)``, or ``INSERT ... SELECT``
    from the table ``source`` (a staging table), ``ON CONFLICT (id) DO UPDATE`` every column."""
    if source is None:
        values = sql.SQL("VALUES ({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
    else:
        values = sql.SQL("SELECT {} FROM {}").format(_column_list(), sql.Identifier(source))
    return sql.SQL("INSERT INTO {} ({}) {} ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(table), _column_list(), values, sql.Identifier(KEY), _set_list()
    )


def create_statement(table: str) -> sql.Composed:
    """CREATE TABLE for the benchmark table, autovacuum off."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(name),
            sql.SQL(type_name),
            sql.SQL(" PRIMARY KEY" if name == KEY else ""),
        )
        for name, type_name in zip(COLUMNS, COLUMN_TYPES, strict=True)
    )
    return sql.SQL("CREATE TABLE {} ({}) WITH (autovacuum_enabled = off)").format(
        sql.Identifier(table), columns
    )


def rebuild(
    dsn: str, table: str, rows: Sequence[dict[str, Any]] = (), template: str | None = None
) -> bool:
    """Drop and create ``table``, fill it with ``rows`` (by COPY) or with the rows of the table
    ``template`` (server-side, faster), VACUUM ANALYZE it and take a CHECKPOINT.

    Returns False if the role may not CHECKPOINT (it needs superuser or pg_checkpoint).
    """
    name = sql.Identifier(table)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(create_statement(table))
        if rows:
            copy_statement = sql.SQL("COPY {} ({}) FROM STDIN").format(name, _column_list())
            with conn.cursor() as cur, cur.copy(copy_statement) as copy:
                for values in as_params(rows):
                    copy.write_row(values)
        if template is not None:
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                    name, _column_list(), _column_list(), sql.Identifier(template)
                )
            )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(name))
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True


def fingerprint(dsn: str, table: str) -> Fingerprint:
    """What ``table`` holds now."""
    query = sql.SQL(
        """SELECT count(*), coalesce(sum(t.score), 0),
                  md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), ''))
           FROM {} AS t"""
    ).format(sql.Identifier(table))
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(query).fetchone()
    assert found is not None  # an aggregate without GROUP BY returns one row
    return Fingerprint(int(found[0]), int(found[1]), str(found[2]))


class Workload:
    """The rows of one benchmark command, the table, and what the table must hold after a run.

    Opening it (``with``) loads the new rows by COPY (a path no side uses) to learn the
    fingerprint every run must leave, and the old rows into a template table
    (``<table>_old``, dropped on exit); ``prepare(path)`` rebuilds the table for the next run;
    ``check()`` raises CheckFailed when the table holds anything else. The table is left as the
    last run wrote it, unless not ``keep_table``.
    """

    def __init__(self, dsn: str, table: str, count: int, *, keep_table: bool = True) -> None:
        self.dsn = dsn
        self.keep_table = keep_table
        self.table = table
        self.template = f"{table}_old"
        self.updated = datetime.now(timezone.utc)
        self.rows = new_rows(count, self.updated)
        self.expected: Fingerprint | None = None
        self.checkpoints = True
        """False once the role was refused a CHECKPOINT: runs then start without one."""

    def __enter__(self) -> Workload:
        self.checkpoints = rebuild(self.dsn, self.table, self.rows)
        found = fingerprint(self.dsn, self.table)
        score_sum = sum(row["score"] for row in self.rows)
        if (found.rows, found.score_sum) != (len(self.rows), score_sum):
            raise CheckFailed(f"reference load: {found}, expected {len(self.rows)} rows")
        self.expected = found
        old_rows = make_rows(
            len(self.rows), seed=2, prefix=OLD_PREFIX, updated=self.updated - timedelta(days=1)
        )
        rebuild(self.dsn, self.template, old_rows)
        return self

    def __exit__(self, *exc_info: object) -> None:
        dropped = [self.template] if self.keep_table else [self.template, self.table]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for table in dropped:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

    def prepare(self, path: str) -> None:
        """The table as the next run must find it: empty (insert path) or holding every key
        with an old value (update path)."""
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        template = self.template if path == "update" else None
        self.checkpoints = rebuild(self.dsn, self.table, template=template) and self.checkpoints

    def check(self) -> None:
        """CheckFailed unless the table holds exactly the new rows."""
        expected = self.expected
        if expected is None:
            raise RuntimeError("open the workload first (with): nothing to compare the table with")
        found = fingerprint(self.dsn, self.table)
        if found != expected:
            raise CheckFailed(f"the table holds {found}; expected {expected}")
