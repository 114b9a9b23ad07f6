"""The journal on PostgreSQL: a damaged journal replayed, a full one holding put() back, the
progress table kept by the queue."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named
from writebehind import Journal, PostgresUpsert, QueueFull, SchemaError, WriteBehindQueue
from writebehind.journal.keeper import encode_record
from writebehind.journal.segments import HEADER_SIZE, SegmentWriter


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


def journal_of_0_2(root: Path, rows: list[tuple[Any, ...]]) -> None:
    """A journal as writebehind 0.2 left it: version 1 segments of records that give their
    values by position only (lane 0), of a queue named "counters"."""
    with SegmentWriter(root, "counters") as writer:
        writer.append([encode_record(0, params[0], params, {}) for params in rows])
        directory = writer.path
    for segment in directory.glob("*.seg"):
        data = bytearray(segment.read_bytes())
        body = struct.pack("<8sHHQ", b"wbjournl", 1, 0, struct.unpack_from("<Q", data, 12)[0])
        data[:HEADER_SIZE] = body + struct.pack("<I", zlib.crc32(body))
        segment.write_bytes(bytes(data))


def test_a_journal_of_0_2_is_replayed_by_position_when_the_columns_match(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k integer PRIMARY KEY, n bigint NOT NULL")
    journal_of_0_2(tmp_path, [(k, 5) for k in range(10)])
    wb = counters(dsn, table_name, Journal(tmp_path))
    wb.start()
    assert wb.flush(timeout=60)
    wb.close(timeout=30)
    assert wb.metrics().total_replayed == 10
    assert db.execute(named("SELECT count(*), sum(n) FROM {}", table_name)).fetchone() == (10, 50)


def test_a_journal_of_0_2_whose_values_do_not_fit_the_columns_is_handed_over_not_retried(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k integer PRIMARY KEY, n bigint NOT NULL")
    journal_of_0_2(tmp_path, [(k, 5, "extra") for k in range(10)])
    given_up: list[tuple[Any, BaseException]] = []
    wb = counters(
        dsn, table_name, Journal(tmp_path), on_failure=lambda r, e: given_up.append((r, e))
    )
    wb.start()
    assert wb.flush(timeout=60)
    wb.close(timeout=30)
    m = wb.metrics()
    assert (m.total_failed, m.total_retries) == (10, 0)
    assert all(isinstance(error, SchemaError) for _, error in given_up)
    assert "3 values" in str(given_up[0][1])
