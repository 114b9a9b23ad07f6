"""The journal on PostgreSQL: a damaged journal replayed, a full one holding put() back, the
progress table kept by the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named
from writebehind import Journal, PostgresUpsert, QueueFull, WriteBehindQueue


def counters(dsn: str, table: str, journal: Journal, **options: Any) -> WriteBehindQueue:
    sink = PostgresUpsert(dsn, table, "k", merge={"n": "add"}, write_timeout=60)
    options.setdefault("registry", None)
    return WriteBehindQueue(sink, journal=journal, name="counters", **options)


def left_in_the_journal(dsn: str, table: str, journal: Journal, rows: int) -> None:
    """Put ``rows`` rows while the table is locked, then give up as the exit deadline does:
    they stay in the journal, as a killed process would leave them."""
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN SHARE MODE", table))
        wb = counters(dsn, table, journal, flush_interval=0.05)
        for i in range(rows):
            wb.put({"k": i % 10, "n": 1})
        wb.flush(timeout=0.2)  # the writes wait on the lock
        wb.abandon()
        locker.rollback()
    wb.close(timeout=30)
    assert wb.metrics().total_abandoned == rows


def test_a_damaged_journal_is_replayed_but_for_the_damage_which_is_counted_and_kept(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k integer PRIMARY KEY, n bigint NOT NULL")
    journal = Journal(tmp_path)
    left_in_the_journal(dsn, table_name, journal, 200)
    [directory] = [p for p in (tmp_path / "counters").iterdir() if not p.name.startswith(".")]
    [segment] = sorted(directory.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x40  # a flipped bit in a record in the middle
    segment.write_bytes(bytes(data[:-3]))  # and the last record torn, as by a power cut

    wb = counters(dsn, table_name, journal)
    wb.start()
    assert wb.flush(timeout=60)
    metrics = wb.metrics()
    wb.close(timeout=30)
    total = db.execute(named("SELECT sum(n) FROM {}", table_name)).fetchone()
    assert total == (198,)  # 200, but the damaged record and the torn one
    assert metrics.total_replayed == 198 and metrics.total_corrupt == 1
    assert not directory.exists()  # replayed: removed, but for the damaged bytes
    assert list((tmp_path / "counters" / ".corrupt").iterdir())


def test_a_full_journal_holds_put_back_until_its_rows_are_written(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k integer PRIMARY KEY, n bigint NOT NULL")
    journal = Journal(tmp_path, max_bytes=16384, segment_bytes=4096)
    wb = counters(dsn, table_name, journal, flush_interval=0.05)
    wb.start()
    accepted = 0
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN SHARE MODE", table_name))
        with pytest.raises(QueueFull, match="journal is full"):
            for i in range(10_000):
                wb.put_nowait({"k": i % 10, "n": 1})
                accepted += 1
        with pytest.raises(QueueFull):
            wb.put({"k": 0, "n": 1}, timeout=0.2)
        assert wb.metrics().journal_bytes <= 16384
        locker.rollback()
    wb.put({"k": 0, "n": 1}, timeout=30)  # written meanwhile: the segments are released
    assert wb.flush(timeout=30)
    wb.close(timeout=30)
    assert 100 < accepted < 10_000
    total = db.execute(named("SELECT sum(n) FROM {}", table_name)).fetchone()
    assert total == (accepted + 1,)
