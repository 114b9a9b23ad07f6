"""The application benchmark, briefly: the Flask example under gunicorn, three endpoints."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest

from benchmarks.research.app import AppResult, format_app_results, run


def gunicorn_children() -> set[int]:
    """Processes of this test's process running gunicorn or a load client."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:  # it ended meanwhile
            continue
        if parent == os.getpid() and (b"gunicorn" in command or b"research._load" in command):
            found.add(int(entry))
    return found


@pytest.mark.shares("last_visits")  # the example's table: workers sharing a server take turns
def test_three_endpoints_answer_and_every_accepted_visit_is_in_the_table(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    existed = db.execute("SELECT to_regclass('last_visits')").fetchone() != (None,)
    results = run(dsn, seconds=1, clients=2, workers=1)

    assert [r.endpoint for r in results] == ["no-op", "write in request", "writebehind"]
    for r in results:
        assert r.requests > 0 and r.req_per_s > 0 and r.errors == 0, r
        assert 0 < r.p50_ms <= r.p99_ms, r
        assert r.accepted > r.requests  # the warm-up is accepted, not measured
    noop, direct, writebehind = results
    assert noop.ratio_to_noop == 1.0 and writebehind.ratio_to_noop > 0
    # Every accepted request is counted in the table once the server has stopped.
    assert (noop.in_table, noop.all_persisted) == (None, None)
    for r in (direct, writebehind):
        assert r.in_table == r.accepted and r.all_persisted, r
    assert writebehind.lag_s is not None and direct.lag_s is None

    # Nothing is left behind: no server, no client, no table the run made.
    assert gunicorn_children() == set()
    exists = db.execute("SELECT to_regclass('last_visits')").fetchone() != (None,)
    assert exists == existed
    table = format_app_results(results)
    assert "writebehind" in table and f"{writebehind.accepted:,} accepted (all)" in table


@pytest.mark.shares("last_visits")  # the example's table: workers sharing a server take turns
def test_a_table_that_existed_keeps_its_own_rows(dsn: str, db: psycopg.Connection[Any]) -> None:
    db.execute("DROP TABLE IF EXISTS last_visits")
    db.execute(
        "CREATE TABLE last_visits (page varchar(200) PRIMARY KEY, views bigint NOT NULL,"
        " first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL, referrer text)"
    )
    try:
        db.execute("INSERT INTO last_visits VALUES ('home', 7, now(), now(), NULL)")
        results = run(dsn, seconds=0.5, clients=1, workers=1)
        assert all(r.errors == 0 for r in results)
        assert db.execute("SELECT page, views FROM last_visits").fetchall() == [("home", 7)]
    finally:
        db.execute("DROP TABLE last_visits")


def test_the_table_of_results_says_what_is_missing() -> None:
    missing = AppResult("writebehind", 10, 1.0, 10.0, 0.9, 1.0, 2.0, 0, accepted=10, in_table=9)
    assert missing.all_persisted is False
    assert "9 of 10 accepted (MISSING)" in format_app_results([missing])


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"seconds": 0}, ValueError, "seconds must be a positive number"),
        ({"seconds": "10"}, TypeError, "seconds must be a number"),
        ({"clients": 0}, ValueError, "clients must be at least 1"),
        ({"workers": 1.5}, TypeError, "workers must be an int"),
    ],
)
def test_bad_arguments_fail_before_anything_starts(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        run("host=/nonexistent", **arguments)
