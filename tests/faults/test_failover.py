"""A real failover under load: pg_auto_failover's monitor, a primary and a synchronous standby on
127.0.0.1; two producer processes write through queues with the default settings on the
multi-host conninfo while the primary is switched over twice and its postmaster killed once.
No row is lost, each key ends at its last value, nothing is given up, and writing resumes
within seconds of each promotion."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.auto_failover import Formation, formation, missing
from tests.conftest import require
from tests.faults.conftest import KEY

pytestmark = pytest.mark.fault

CHILD = str(Path(__file__).with_name("failover_child.py"))
PRODUCERS = 2
KEYS = 500


@pytest.fixture
def cluster() -> Iterator[Formation]:
    require(missing())
    with formation() as made:
        yield made


def clock() -> str:
    """The wall-clock time as the producers' log shows it, to read the two side by side."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"


def highest(conninfo: str, table: str) -> int | None:
    """The highest value written so far, read on the primary (None: none can be reached)."""
    try:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            row = conn.execute(f"SELECT coalesce(max(v), -1) FROM {table}").fetchone()
            return None if row is None else int(row[0])
    except psycopg.Error:
        return None


def resumed_after(cluster: Formation, table: str, since: float, before: int) -> float:
    """Seconds from ``since`` until a value above ``before`` is written on the new primary."""
    deadline = since + 120
    while time.monotonic() < deadline:
        value = highest(cluster.conninfo, table)
        if value is not None and value > before:
            return time.monotonic() - since
        time.sleep(0.1)
    pytest.fail(f"no write resumed within 120 s:\n{cluster.logs()}")


@pytest.mark.timeout(900)
def test_two_switchovers_and_a_killed_primary_lose_no_row_under_load(
    cluster: Formation, tmp_path: Path
) -> None:
    table = "failover_items"
    with psycopg.connect(cluster.conninfo, autocommit=True) as db:
        db.execute(f"CREATE TABLE {table} (k bigint PRIMARY KEY, v bigint NOT NULL, p int)")
    logs = [tmp_path / f"producer-{n}.log" for n in range(PRODUCERS)]
    children = [
        subprocess.Popen(
            [sys.executable, CHILD, cluster.conninfo, table, str(n), str(KEYS), str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, log in enumerate(logs)
    ]
    resume: dict[str, float] = {}
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n", child.stderr
        for fault in ("switchover 1", "switchover 2", "kill -9 of the primary"):
            time.sleep(3)  # the load runs a while between faults: the fault's spacing
            before = highest(cluster.conninfo, table)
            assert before is not None and before >= 0
            old = cluster.wait_steady()
            started = time.monotonic()
            print(f"{clock()} {fault}: begins (primary {old})")
            if fault.startswith("switchover"):
                cluster.perform_failover()
            else:
                cluster.kill_postmaster(old)
            resume[fault] = resumed_after(cluster, table, started, before)
            print(f"{clock()} {fault}: writes resumed after {resume[fault]:.1f} s")
            new = cluster.wait_steady(timeout=180)
            print(f"{clock()} {fault}: steady, primary {old} -> {new}")
        time.sleep(2)
    finally:
        results = []
        for child in children:
            out, err = child.communicate("stop\n", timeout=300)
            print(err)  # the queue's log: what it met, second by second
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    print("resume after " + ", ".join(f"{fault}: {s:.1f}s" for fault, s in resume.items()))
    last: dict[int, int] = {}
    puts = 0
    for log in logs:
        for line in log.read_text().splitlines():
            key, value = map(int, line.split())
            last[key] = max(last.get(key, -1), value)
            puts += 1
    with psycopg.connect(cluster.conninfo) as db:
        found: dict[int, int] = dict(db.execute(f"SELECT k, v FROM {table}").fetchall())
    assert found == last, {k: (found.get(k), v) for k, v in last.items() if found.get(k) != v}
    for result in results:
        assert result["flushed"] and result["failures"] == [], result
        assert (result["total_failed"], result["total_abandoned"]) == (0, 0), result
        assert result["total_persisted"] == result["total_enqueued"], result
    assert sum(r["total_enqueued"] for r in results) == puts
    assert puts > 10_000, puts
    retries = sum(r["total_retries"] for r in results)
    print(f"{puts} rows put by {PRODUCERS} processes, 0 lost, {retries} retries ({KEY}: keys)")
    for fault, seconds in resume.items():
        assert seconds < 60, (fault, seconds)
