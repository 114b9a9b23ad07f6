"""Keep the latest reading of 1,000 sensors: 10,000 rows through a WriteBehindQueue, checked.

    python examples/quickstart.py            # starts an embedded server (extra: embedded)
    python examples/quickstart.py --dsn DSN  # or uses yours

The table is created if missing. Prints the queue's metrics and what the table holds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import psycopg
from prometheus_client import CollectorRegistry

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.embedded import database

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS sensor_latest (
    sensor text PRIMARY KEY,
    reading integer NOT NULL CHECK (reading >= 0),
    detail jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description="writebehind quickstart")
    parser.add_argument("--dsn", help="conninfo of a PostgreSQL; default: an embedded one")
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with database(args.dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE_DDL)
            conn.execute("TRUNCATE sensor_latest")

        rejected: list[str] = []
        sink = PostgresUpsert(dsn, table="sensor_latest", key="sensor")
        started = time.perf_counter()
        with WriteBehindQueue(
            sink,
            batch_size=500,
            registry=CollectorRegistry(),
            on_failure=lambda rows, error: rejected.extend(row["sensor"] for row in rows),
        ) as wb:
            for i in range(args.rows):
                # 1,000 sensors, each read many times: the reading put last is the one kept.
                wb.put({"sensor": f"s{i % 1000}", "reading": i, "detail": {"n": i}})
            wb.put({"sensor": "broken", "reading": -1, "detail": None})  # violates the CHECK
            wb.flush()
            metrics = wb.metrics()
        elapsed = time.perf_counter() - started

        with psycopg.connect(dsn) as conn:
            counted = conn.execute("SELECT count(*), sum(reading) FROM sensor_latest").fetchone()
        sensors, total = counted or (0, 0)
        expected_sensors = min(args.rows, 1000)
        expected_total = sum(range(max(0, args.rows - 1000), args.rows))
        print(f"put {metrics.total_enqueued} rows in {elapsed:.2f}s")
        print(
            f"persisted {metrics.total_persisted}, failed {metrics.total_failed} {rejected}, "
            f"batches {metrics.total_batches}, retries {metrics.total_retries}"
        )
        print(f"table sensor_latest: {sensors} sensors, sum(reading) = {total}")
        ok = (sensors, total) == (expected_sensors, expected_total) and rejected == ["broken"]
        print("OK: every sensor holds its last reading" if ok else "MISMATCH")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
