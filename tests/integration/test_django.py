"""The Django app, in the example project, run by Django itself in subprocesses."""

from __future__ import annotations

import os
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

    checked = django(project_dsn, "manage.py", "check", "--database", "default")
    assert checked.returncode == 0, checked.stderr
    assert "no issues" in checked.stdout

    tested = django(project_dsn, "manage.py", "test", "pageviews", "-v2")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Ran 4 tests" in tested.stderr
    assert "OK" in tested.stderr


def write_settings(folder: Path, body: str) -> None:
    (folder / "wb_settings.py").write_text(
        "from demo_site.settings import *  # noqa\n" + textwrap.dedent(body)
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'WRITEBEHIND = {"QUEUES": {"page_views": {"table": "pageviews_pageview"}}}',
            "WRITEBEHIND['QUEUES']['page_views']['key'] is missing",
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
            'WRITEBEHIND = {"QUEUS": {}}',
            "WRITEBEHIND['QUEUS'] is not a writebehind setting",
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


def test_check_reports_an_unusable_key_as_an_error(project_dsn: str, tmp_path: Path) -> None:
    assert django(project_dsn, "manage.py", "migrate", "-v0").returncode == 0
    write_settings(
        tmp_path,
        """
        WRITEBEHIND = {"QUEUES": {"page_views": {"table": "pageviews_pageview", "key": "views"}}}
        """,
    )
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
    assert "has no primary key or unique index" in checked.stderr


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
