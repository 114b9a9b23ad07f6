"""A process putting rows into a queue with a journal is killed with SIGKILL at random moments, and
the next process replays what it left: every row whose put() returned is written, at its last
value, and a counter merged with ``add`` counts each put once."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named, wait_until
from tests.faults.journal_child import KEYS, KILL_AT_NEW_SEGMENT, is_delete

pytestmark = pytest.mark.fault

CHILD = str(Path(__file__).with_name("journal_child.py"))


@dataclasses.dataclass
class Run:
    """One killed process: the rows whose put() returned, and the one that may have been in
    flight when it died (appended to the journal, not yet said)."""

    returned: list[int]
    in_flight: int


def start(mode: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, mode, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


def killed_run(
    dsn: str,
    table: str,
    journal: Path,
    log: Path,
    first: int,
    rng: random.Random,
    mode: str = "run",
) -> Run:
    writers, coalesce = rng.choice(["1", "2"]), rng.choice(["0", "1"])
    child = start(mode, dsn, table, str(journal), str(first), str(log), writers, coalesce)
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != "ready\n":
        child.kill()
        _, stderr = child.communicate(timeout=30)
        pytest.fail(f"the child did not start: {line!r} {stderr}")
    time.sleep(rng.uniform(0.0, 0.4))  # the fault: a kill at a random moment, not a wait
    child.kill()
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == -9, stderr
    text = log.read_text() if log.exists() else ""
    # A number cut short by the kill was not said whole: its put is the one in flight.
    lines = text.split("\n")[:-1]
    returned = [int(number) for number in lines]
    in_flight = (returned[-1] + 1) if returned else first
    return Run(returned, in_flight)


def check(db: psycopg.Connection[Any], table: str, runs: list[Run]) -> int:
    """Every returned put is in the table: each key at the value put last (or a later one
    in flight), its counter at the number of its puts (plus those in flight). Returns the
    number of returned puts."""
    returned = [i for run in runs for i in run.returned]
    in_flight = {run.in_flight for run in runs}
    puts = Counter(i % KEYS for i in returned)
    extra = Counter(i % KEYS for i in in_flight)
    last: dict[int, int] = {}
    for i in returned:
        last[i % KEYS] = max(last.get(i % KEYS, -1), i)
    found = {k: (v, n) for k, v, n in db.execute(named("SELECT k, v, n FROM {}", table))}
    wrong = []
    for key in set(puts) | set(found):
        value, count = found.get(key, (None, 0))
        if key in last and value != last[key] and value not in in_flight:
            wrong.append(f"key {key}: value {value}, last put {last[key]}")
        elif key in last and value is not None and value < last[key]:
            wrong.append(f"key {key}: value {value} older than the last put {last[key]}")
        if not puts[key] <= count <= puts[key] + extra[key]:
            wrong.append(f"key {key}: counter {count}, {puts[key]} puts (+{extra[key]} in flight)")
    assert not wrong, wrong[:20]
    return len(returned)


@pytest.mark.timeout(3600)  # 50 kills take about a minute; --soak's 1,000 about 15
def test_killed_processes_lose_nothing_and_replay_each_row_once(
    dsn: str,
    db: psycopg.Connection[Any],
    table_name: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    kills = 1000 if request.config.getoption("--soak") else 50
    create(db, table_name, "k integer PRIMARY KEY, v bigint NOT NULL, n bigint NOT NULL")
    journal = tmp_path / "journal"
    rng = random.Random(int(time.time()))
    runs = []
    for number in range(kills):
        log = tmp_path / f"run-{number}.log"
        runs.append(killed_run(dsn, table_name, journal, log, number * 10_000_000, rng))
    drain = start("drain", dsn, table_name, str(journal))
    started = time.monotonic()
    stdout, stderr = drain.communicate(timeout=900)
    drained_in = time.monotonic() - started
    assert drain.returncode == 0, stderr
    metrics = json.loads(stdout)
    returned = check(db, table_name, runs)
    assert returned > kills  # the runs did put rows
    assert metrics["total_corrupt"] == 0
    # Every journal was replayed and removed. The progress rows of the dead processes stay,
    # each claimed by the process that replayed it (a write they left running cannot commit);
    # the last process's own were deleted with its journal.
    left = [p.name for p in (journal / table_name).iterdir() if not p.name.startswith(".")]
    assert left == []
    unclaimed = db.execute(
        "SELECT journal FROM writebehind_progress WHERE starts_with(journal, %s) "
        "AND starts_with(journal, owner)",
        (f"{table_name}/",),
    ).fetchall()
    assert unclaimed == []
    last = metrics["total_replayed"]
    print(f"{kills} kills, {returned} puts returned; {last} replayed at last in {drained_in:.0f}s")


def test_a_kill_between_creating_a_segment_and_writing_its_header_loses_nothing(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    create(db, table_name, "k integer PRIMARY KEY, v bigint NOT NULL, n bigint NOT NULL")
    journal = tmp_path / "journal"
    log = tmp_path / "run.log"
    child = start(
        "run",
        dsn,
        table_name,
        str(journal),
        "0",
        str(log),
        "1",
        "0",
        env={KILL_AT_NEW_SEGMENT: "4"},
    )
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == -9, stderr  # it killed itself at its fourth segment
    (instance,) = [p for p in (journal / table_name).iterdir() if not p.name.startswith(".")]
    empty = [p for p in instance.glob("*.seg") if p.stat().st_size == 0]
    assert len(empty) == 1, sorted(p.name for p in instance.iterdir())
    returned = [int(line) for line in log.read_text().split("\n")[:-1]]
    assert len(returned) > 100  # three segments' worth of rows
    # The child may have written some of them before it died; the replay writes the others.
    # A COMMIT it sent just before dying may still be under way on the server: count once its
    # sessions are done with their transactions.
    assert wait_until(lambda: not _transactions_under_way(db))
    found = db.execute(named("SELECT count(*) FROM {}", table_name)).fetchone()
    written_before = found[0] if found else 0
    drain = start("drain", dsn, table_name, str(journal))
    stdout, stderr = drain.communicate(timeout=300)
    assert drain.returncode == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["total_corrupt"] == 0
    assert not [line for line in stderr.splitlines() if line.startswith("ERROR")], stderr
    assert not (journal / table_name / ".corrupt").exists()
    check(db, table_name, [Run(returned, returned[-1] + 1)])
    assert metrics["total_replayed"] >= len(returned) - written_before > 0


def _transactions_under_way(db: psycopg.Connection[Any]) -> int:
    """Sessions of other processes inside a transaction on the test database."""
    found = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction', "
        "'idle in transaction (aborted)')"
    ).fetchone()
    return found[0] if found else 0


def _applied(ops: list[int]) -> tuple[int, int] | None:
    """What ``ops`` (of one key, in order) leave: (last value, puts since the last delete)."""
    state: tuple[int, int] | None = None
    for i in ops:
        state = None if is_delete(i) else (i, (state[1] if state else 0) + 1)
    return state


def test_deletes_through_the_journal_are_replayed_once_in_order_with_the_puts(
    dsn: str, db: psycopg.Connection[Any], table_name: str, tmp_path: Path
) -> None:
    """Processes putting and deleting are killed; the replay applies every returned
    operation once, in put order: a key ends as its last operation left it, its counter at
    the puts since its last delete (a delete replayed twice, or late, would lose later puts;
    a put replayed twice would count twice)."""
    create(db, table_name, "k integer PRIMARY KEY, v bigint NOT NULL, n bigint NOT NULL")
    journal = tmp_path / "journal"
    rng = random.Random(int(time.time()))
    runs = [
        killed_run(
            dsn,
            table_name,
            journal,
            tmp_path / f"run-{number}.log",
            number * 10_000_000,
            rng,
            mode="mixed",
        )
        for number in range(10)
    ]
    drain = start("drain", dsn, table_name, str(journal))
    stdout, stderr = drain.communicate(timeout=900)
    assert drain.returncode == 0, stderr
    metrics = json.loads(stdout)
    returned = [i for run in runs for i in run.returned]
    assert sum(map(is_delete, returned)) > 10  # the runs did delete
    by_key: dict[int, list[int]] = {}
    for i in returned:
        by_key.setdefault(i % KEYS, []).append(i)
    in_flight: dict[int, list[int]] = {}
    for run in runs:
        in_flight.setdefault(run.in_flight % KEYS, []).append(run.in_flight)
    found = {k: (v, n) for k, v, n in db.execute(named("SELECT k, v, n FROM {}", table_name))}
    wrong = []
    for key in set(by_key) | set(found) | set(in_flight):
        flying = in_flight.get(key, [])
        possible = set()
        for chosen in range(2 ** len(flying)):  # each op in flight was applied, or not
            extra = [op for bit, op in enumerate(flying) if chosen >> bit & 1]
            possible.add(_applied(sorted(by_key.get(key, []) + extra)))
        if found.get(key) not in possible:
            wrong.append(f"key {key}: {found.get(key)}, expected one of {possible}")
    assert not wrong, wrong[:20]
    assert metrics["total_corrupt"] == 0
    print(f"10 kills, {len(returned)} operations returned, {metrics['total_replayed']} replayed")
