"""Import a CSV of sensor readings into PostgreSQL through a write-behind queue.

    python examples/batch_import.py [--dsn DSN] [--csv PATH] [--rows N] [--maxsize M]

If the CSV does not exist it is generated first: N readings (default 100,000), among them a few
glitches (-999 °C) that the table's CHECK refuses. The file is read row by row and each row is
put on a queue of at most M rows: when the database falls behind, put() blocks, so memory stays
flat however large the file. Refused rows are written to a rejects CSV beside the input.
Needs the 'progress' extra (tqdm) for the progress bar.
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.embedded import database

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS readings (
    sensor_id integer NOT NULL,
    taken_at timestamptz NOT NULL,
    celsius double precision NOT NULL CHECK (celsius > -273.15),
    PRIMARY KEY (sensor_id, taken_at)
)
"""
FIELDS = ("sensor_id", "taken_at", "celsius")
SENSORS = 100
GLITCH_EVERY = 10_007


def generate_csv(path: Path, rows: int) -> None:
    """``rows`` readings of SENSORS sensors, one a minute each; every GLITCH_EVERY-th is -999."""
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(FIELDS)
        for n in range(rows):
            minute, sensor = divmod(n, SENSORS)
            celsius = -999.0 if n % GLITCH_EVERY == GLITCH_EVERY - 1 else rng.gauss(20, 5)
            taken_at = (start + timedelta(minutes=minute)).isoformat()
            writer.writerow((sensor, taken_at, f"{celsius:.2f}"))


def read_rows(path: Path) -> Iterator[dict[str, Any] | str]:
    """The row of each line; a line that does not parse gives its error, naming the line."""
    with path.open(newline="") as file:
        for number, record in enumerate(csv.DictReader(file), start=2):
            try:
                yield {
                    "sensor_id": int(record["sensor_id"]),
                    "taken_at": datetime.fromisoformat(record["taken_at"]),
                    "celsius": float(record["celsius"]),
                }
            except (TypeError, ValueError) as error:
                yield f"line {number}: {error}"


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description="Import a CSV through a write-behind queue")
    parser.add_argument("--dsn", help="conninfo of a PostgreSQL; default: an embedded one")
    parser.add_argument("--csv", type=Path, default=Path(tempfile.gettempdir()) / "readings.csv")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of a generated CSV")
    parser.add_argument("--maxsize", type=int, default=10_000, help="bound of the queue")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("writebehind").setLevel(logging.CRITICAL)  # refused rows: see rejects
    try:
        from tqdm import tqdm
    except ImportError:
        print("the progress bar needs tqdm: pip install 'writebehind[progress]'", file=sys.stderr)
        return 2

    if not args.csv.exists():
        generate_csv(args.csv, args.rows)
        print(f"generated {args.csv} ({args.rows:,} rows)")
    with args.csv.open() as file:
        lines = sum(1 for _ in file) - 1
    rejects_path = args.csv.with_name(args.csv.stem + ".rejects.csv")

    refused: list[tuple[Mapping[str, Any], str]] = []
    malformed: list[str] = []
    with database(args.dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE_DDL)
            conn.execute("TRUNCATE readings")
        sink = PostgresUpsert(dsn, table="readings", key=("sensor_id", "taken_at"))
        started = time.perf_counter()
        wb = WriteBehindQueue(
            sink,
            maxsize=args.maxsize,
            registry=CollectorRegistry(),
            # Runs on the worker thread: keep it short, list.extend is thread-safe.
            on_failure=lambda rows, error: refused.extend((row, str(error)) for row in rows),
        )
        with wb, tqdm(total=lines, unit=" rows", mininterval=0.5, smoothing=0.1) as bar:
            for row in read_rows(args.csv):
                if isinstance(row, str):
                    malformed.append(row)
                else:
                    wb.put(row)  # blocks while the queue is full: backpressure
                bar.update()
        elapsed = time.perf_counter() - started
        metrics = wb.metrics()
        with psycopg.connect(dsn) as conn:
            found = conn.execute("SELECT count(*) FROM readings").fetchone()
    in_table = found[0] if found else 0

    with rejects_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow((*FIELDS, "error"))
        for refused_row, error in refused:
            writer.writerow((*(refused_row[field] for field in FIELDS), error.splitlines()[0]))
    expected = lines - len(malformed) - len(refused)
    ok = in_table == expected and metrics.total_persisted == expected
    summary = [
        ("rows read", f"{lines:,}"),
        ("written", f"{metrics.total_persisted:,}"),
        ("refused", f"{len(refused):,}  (see {rejects_path})"),
        ("malformed", f"{len(malformed):,}"),
        ("seconds", f"{elapsed:.2f}"),
        ("rows/s", f"{lines / elapsed:,.0f}"),
        ("peak memory", f"{peak_memory_mb():.1f} MB"),
        ("in table", f"{in_table:,}  {'OK' if ok else 'MISMATCH'}"),
    ]
    for label, value in summary:
        print(f"{label:<12} {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
