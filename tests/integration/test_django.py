"""The Django app, in the example project, run by Django itself in subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from writebehind.django.settings import database_conninfo

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"


@pytest.fixture
def project_dsn(db: psycopg.Connection[Any], dsn: str) -> Iterator[str]:
    """A database of the test's own, so that migrations leave nothing behind."""
    name = f"wb_django_{os.getpid()}"
    db.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(dsn, dbname=name)
    db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def django(
    dsn: str, *args: str, settings: str = "demo_site.settings", extra_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    path = [str(PROJECT), *([str(extra_path)] if extra_path else [])]
    env = dict(
        os.environ,
        WRITEBEHIND_DSN=dsn,
        DJANGO_SETTINGS_MODULE=settings,
        PYTHONPATH=os.pathsep.join(path),
    )
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )


def test_example_project_migrates_passes_the_checks_and_its_own_tests(project_dsn: str) -> None:
    before = django(project_dsn, "manage.py", "check", "--database", "default")
    assert before.returncode == 0, before.stderr
    assert "writebehind.W001" in before.stderr  # no table yet, migrations pending: a warning

    migrated = django(project_dsn, "manage.py", "migrate", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    unchanged = django(project_dsn, "manage.py", "makemigrations", "--check", "--dry-run")
    assert unchanged.returncode == 0, unchanged.stdout  # the migration matches the model

    checked = django(project_dsn, "manage.py", "check", "--database", "default")
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout

    tested = django(project_dsn, "manage.py", "test", "pageviews", "-v2")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Ran 18 tests" in tested.stderr
    assert "OK" in tested.stderr
    # Under TestCase with EAGER, each of these two tests finds its own row alone in the table:
    # the other's was rolled back with it.
    for test in (
        "test_a_visit_is_in_the_table_when_the_view_returns",
        "test_rows_of_the_other_tests_were_rolled_back",
    ):
        assert re.search(
            rf"^{test} \(pageviews\.tests\.EagerLastVisits.*\) \.\.\. ok$", tested.stderr, re.M
        )


def write_settings(folder: Path, body: str) -> None:
    (folder / "wb_settings.py").write_text(
        "from demo_site.settings import *  # noqa\n" + textwrap.dedent(body)
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'WRITEBEHIND = {"QUEUES": {"last_visits": {"table": "pageviews_lastvisit"}}}',
            "WRITEBEHIND['QUEUES']['last_visits']: PostgresUpsert('pageviews_lastvisit') needs "
            "key=",
        ),
        (
            'WRITEBEHIND = {"QUEUES": {"pv": {"table": "t", "key": "k", "batchsize": 10}}}',
            "WRITEBEHIND['QUEUES']['pv']['batchsize'] is not an option",
        ),
        (
            'WRITEBEHIND = {"QUEUES": {"pv": {"table": "t", "key": "k", "batch_size": 0}}}',
            "WRITEBEHIND['QUEUES']['pv']: batch_size must be at least 1",
        ),
        (
            'WRITEBEHIND = {"QUEUES": {"pv": {"table": "pageviews.Hti"}}}',
            "WRITEBEHIND['QUEUES']['pv']['table']: 'pageviews.Hti': the app 'pageviews' has no "
            "model 'Hti' (its models: Hit, LastVisit)",
        ),
        (
            'WRITEBEHIND = {"QUEUS": {}}',
            "WRITEBEHIND['QUEUS'] is not a writebehind setting",
        ),
        (
            'WRITEBEHIND = {**WRITEBEHIND, "EAGER": "yes"}',
            "WRITEBEHIND['EAGER'] must be True or False, got 'yes'",
        ),
        (
            'WRITEBEHIND = {"QUEUES": {"pv": {"table": "t", "key": "k", "on_failure": "no.such"}}}',
            "WRITEBEHIND['QUEUES']['pv']['on_failure']: cannot import 'no.such'",
        ),
        (
            'DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}}',
            "WRITEBEHIND['DSN'] is not set and DATABASES['default'] is not PostgreSQL",
        ),
        (
            'WRITEBEHIND = {"DSN": "host", "QUEUES": {"pv": {"table": "t", "key": "k"}}}',
            "WRITEBEHIND['DSN'] is not a valid conninfo",
        ),
    ],
)
def test_bad_settings_stop_startup_naming_the_key(
    dsn: str, tmp_path: Path, body: str, message: str
) -> None:
    write_settings(tmp_path, body)
    started = django(
        dsn, "-c", "import django; django.setup()", settings="wb_settings", extra_path=tmp_path
    )
    assert started.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured" in started.stderr
    assert message in started.stderr


def test_unknown_queue_name_is_improperly_configured(dsn: str) -> None:
    script = (
        "import django; django.setup()\n"
        "from writebehind.django import get_queue\n"
        "get_queue('nope')\n"
    )
    result = django(dsn, "-c", script)
    assert (
        "ImproperlyConfigured: WRITEBEHIND['QUEUES']: no queue 'nope' is configured"
        in result.stderr
    )


def checked_with(project_dsn: str, tmp_path: Path, queue: str) -> str:
    """What ``manage.py check`` says (it must fail) of a migrated project whose one queue is
    ``queue`` (a dict's source)."""
    assert django(project_dsn, "manage.py", "migrate", "-v0").returncode == 0
    write_settings(tmp_path, f'WRITEBEHIND = {{"QUEUES": {{"last_visits": {queue}}}}}\n')
    checked = django(
        project_dsn,
        "manage.py",
        "check",
        "--database",
        "default",
        settings="wb_settings",
        extra_path=tmp_path,
    )
    assert checked.returncode != 0
    assert "writebehind.E001" in checked.stderr
    return checked.stderr


def test_check_reports_an_unusable_key_as_an_error(project_dsn: str, tmp_path: Path) -> None:
    said = checked_with(
        project_dsn, tmp_path, '{"table": "pageviews_lastvisit", "key": "last_seen"}'
    )
    assert "has no primary key or unique index" in said


def test_check_reports_columns_that_leave_out_a_not_null_column(
    project_dsn: str, tmp_path: Path
) -> None:
    """Every row would be refused: the check says so before the first one is."""
    queue = '{"table": "pageviews.LastVisit", "key": "page", "columns": ["views"]}'
    said = checked_with(project_dsn, tmp_path, queue)
    assert "'first_seen'" in said and "NOT NULL without a default" in said


def test_conninfo_from_databases_default_keeps_libpq_options_only() -> None:
    conninfo = database_conninfo(
        {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "shop",
                "USER": "app",
                "PASSWORD": "s3cret word",
                "HOST": "db.internal",
                "PORT": 6432,
                "OPTIONS": {"sslmode": "require", "isolation_level": 2, "pool": True},
            }
        }
    )
    assert conninfo_to_dict(conninfo) == {
        "dbname": "shop",
        "user": "app",
        "password": "s3cret word",
        "host": "db.internal",
        "port": "6432",
        "sslmode": "require",
    }


def test_conninfo_of_a_database_without_name_is_postgres() -> None:
    conninfo = database_conninfo(
        {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": None, "OPTIONS": {}}}
    )
    assert conninfo_to_dict(conninfo) == {"dbname": "postgres"}


def test_close_queues_returns_when_the_callers_transaction_blocks_the_drain(
    project_dsn: str,
) -> None:
    """As under TestCase without EAGER: the worker waits for a row lock held by the caller's
    own transaction until after tearDown; close_queues() gives up waiting after its default
    bound, and the worker writes the row once the transaction ends."""
    assert django(project_dsn, "manage.py", "migrate", "-v0").returncode == 0
    script = textwrap.dedent(
        """
        import time, django
        django.setup()
        from django.db import transaction
        from django.utils import timezone
        from pageviews.models import LastVisit
        from writebehind.django import close_queues, get_queue

        with transaction.atomic():  # the test's transaction
            now = timezone.now()
            LastVisit.objects.create(
                page="home", views=1, first_seen=now, last_seen=now, referrer="orm"
            )
            get_queue("last_visits").put(
                {"page": "home", "views": 1, "first_seen": now, "last_seen": now,
                 "referrer": "queue"}
            )
            started = time.monotonic()
            close_queues()
            print(f"closed after {time.monotonic() - started:.1f}s")
            transaction.set_rollback(True)
        """
    )
    result = django(project_dsn, "-c", script)
    assert result.returncode == 0, result.stderr
    seconds = float(re.fullmatch(r"closed after (\S+)s\n", result.stdout).group(1))  # type: ignore[union-attr]
    assert 4.5 <= seconds < 30, result.stdout
    assert re.search(
        r"close\(\) timed out after [\d.]+s with 1 rows not yet written", result.stderr
    )
    with psycopg.connect(project_dsn) as conn:  # written at exit, once the lock was released
        found = conn.execute("SELECT page, views, referrer FROM pageviews_lastvisit").fetchall()
    assert found == [("home", 1, "queue")]  # the ORM's row was rolled back


NAIVE_PUT = """
import datetime, os, django
django.setup()
import psycopg
from writebehind.django import close_queues, get_queue

queue = get_queue("last_visits")
seen = datetime.datetime(2024, 7, 1, 12, 0)
try:
    queue.put({"page": "p", "views": 1, "first_seen": seen, "last_seen": seen, "referrer": None})
except ValueError as error:
    print("refused:", error)
close_queues(None)
with psycopg.connect(os.environ["WRITEBEHIND_DSN"]) as conn:
    for (seen,) in conn.execute("SELECT last_seen AT TIME ZONE 'UTC' FROM pageviews_lastvisit"):
        print("stored:", seen.isoformat(), "UTC")
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Read in TIME_ZONE, as Django reads them (Paris is UTC+2 in July).
        ('USE_TZ = False\nTIME_ZONE = "Europe/Paris"', "stored: 2024-07-01T10:00:00 UTC"),
        (
            """
            USE_TZ = False
            TIME_ZONE = "Europe/Paris"
            WRITEBEHIND = {**WRITEBEHIND, "EAGER": True}
            """,
            "stored: 2024-07-01T10:00:00 UTC",
        ),
        # The queue's own naive_timezone wins.
        (
            """
            USE_TZ = False
            TIME_ZONE = "Europe/Paris"
            WRITEBEHIND["QUEUES"]["last_visits"]["naive_timezone"] = "America/New_York"
            """,
            "stored: 2024-07-01T16:00:00 UTC",
        ),
        # With USE_TZ, Django warns about naive datetimes; the queue refuses them.
        (
            'USE_TZ = True\nTIME_ZONE = "Europe/Paris"',
            "refused: column 'first_seen' is timestamptz but got a naive datetime",
        ),
    ],
    ids=["use_tz_false", "use_tz_false_eager", "naive_timezone_option", "use_tz_true"],
)
def test_naive_datetimes_without_use_tz_are_read_in_time_zone(
    project_dsn: str, tmp_path: Path, body: str, expected: str
) -> None:
    assert django(project_dsn, "manage.py", "migrate", "-v0").returncode == 0
    write_settings(tmp_path, body)
    result = django(project_dsn, "-c", NAIVE_PUT, settings="wb_settings", extra_path=tmp_path)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith(expected)
