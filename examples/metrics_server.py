"""Serve a queue's Prometheus metrics on /metrics while it writes a stream of rows.

    python examples/metrics_server.py [--dsn DSN] [--port 8000] [--rate 1000] [--rows N]

Puts ``--rate`` rows a second (``--rows`` in all, default: until Ctrl-C) into the table
metrics_demo, one in 500 refused by its CHECK so that the failure panels have something to show,
and serves the metrics at http://127.0.0.1:PORT/metrics for Prometheus to scrape. Point Grafana
at that Prometheus and import examples/grafana/writebehind.json. Ctrl-C drains and stops.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import psycopg
from prometheus_client import start_http_server

from writebehind import PostgresUpsert, WriteBehindQueue
from writebehind.embedded import database

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS metrics_demo (
    key text PRIMARY KEY,
    n integer NOT NULL CHECK (n >= 0),
    payload jsonb
)
"""
REFUSED_EVERY = 500


def main() -> int:
    parser = argparse.ArgumentParser(description="A writing queue with /metrics")
    parser.add_argument("--dsn", help="conninfo of a PostgreSQL; default: an embedded one")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--rate", type=float, default=1000.0, help="rows put per second")
    parser.add_argument("--rows", type=int, default=0, help="rows in all; 0: until Ctrl-C")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("writebehind").setLevel(logging.CRITICAL)  # refusals are on purpose

    with database(args.dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE_DDL)
        # The default registry, as an application would use: /metrics serves it.
        wb = WriteBehindQueue(PostgresUpsert(dsn, table="metrics_demo", key="key"))
        server, _ = start_http_server(args.port, addr="127.0.0.1")
        print(f"serving http://127.0.0.1:{server.server_port}/metrics", flush=True)
        started = time.monotonic()
        put = 0
        try:
            while not args.rows or put < args.rows:
                n = -1 if put % REFUSED_EVERY == REFUSED_EVERY - 1 else put
                wb.put({"key": f"k{put % 10_000}", "n": n, "payload": {"put": put}})
                put += 1
                ahead = put / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the traffic, not synchronising
            wb.flush()
            print(f"put {put} rows; serving until Ctrl-C", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            wb.close()
            server.shutdown()
        print(f"stopped: {wb.metrics()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
