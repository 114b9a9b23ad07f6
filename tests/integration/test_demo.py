"""`python -m writebehind demo`, the README's first command, on the test server."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import named
from writebehind.tools.demo import TABLE

ROOT = Path(__file__).resolve().parents[2]


def writebehind(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = ["-c", code] if code else ["-m", "writebehind", *args]
    return subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def summary(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\| (\S[^|]*?)\s+\|\s+(.*?) \|$", output, re.MULTILINE))


@pytest.fixture
def demo_table(db: psycopg.Connection[Any]) -> Iterator[str]:
    db.execute(named("DROP TABLE IF EXISTS {}", TABLE))
    yield TABLE
    db.execute(named("DROP TABLE IF EXISTS {}", TABLE))


def test_demo_writes_every_row_and_prints_the_summary(dsn: str, demo_table: str) -> None:
    result = writebehind("demo", "--dsn", dsn, "--rows", "20000", "--producers", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    table = summary(result.stdout)
    assert table["rows"] == "20,000"
    assert table["failed"] == "0"
    assert table["retries"] == "0"
    assert table["in table"] == "20,000  OK"
    assert int(table["batches"].replace(",", "")) >= 20_000 // 500
    assert float(table["seconds"]) > 0
    assert int(table["rows/s"].replace(",", "")) > 0
    for percentile in ("put p50", "put p99"):
        assert table[percentile].endswith("µs")
    assert "rows written (100.0%)" in result.stderr  # the progress line's last word


def test_demo_prints_the_batch_size_it_used(dsn: str, demo_table: str) -> None:
    result = writebehind("demo", "--dsn", dsn, "--rows", "2000", "--producers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 producer thread(s), batch size 500, table" in result.stdout
    # More than the queue's maxsize (10,000): its batches hold 10,000 rows, and it says so.
    result = writebehind(
        "demo", "--dsn", dsn, "--rows", "25000", "--producers", "1", "--batch-size", "20000"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch size 10,000 (asked 20,000, capped at the queue's maxsize)" in result.stdout
    assert int(summary(result.stdout)["batches"]) >= 3  # at most 10,000 rows a batch


def test_demo_exits_non_zero_when_the_table_misses_rows(
    dsn: str, db: psycopg.Connection[Any], demo_table: str
) -> None:
    # A demo table of the user's whose CHECK refuses every hundredth row.
    db.execute(
        named(
            """CREATE TABLE {} (id bigint PRIMARY KEY CHECK (id % 100 <> 7), producer integer,
               seq integer, payload jsonb, created_at timestamptz)""",
            demo_table,
        )
    )
    result = writebehind("demo", "--dsn", dsn, "--rows", "1000", "--producers", "2")
    assert result.returncode == 1
    table = summary(result.stdout)
    assert table["failed"] == "10"
    assert table["in table"] == "990  MISMATCH"


def test_help_lists_the_commands() -> None:
    result = writebehind("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout
    demo_help = writebehind("demo", "--help")
    for option in ("--dsn", "--rows", "--producers", "--batch-size"):
        assert option in demo_help.stdout


def test_bad_arguments_are_refused() -> None:
    result = writebehind("demo", "--producers", "0")
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr


def test_without_pgserver_the_demo_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['pgserver'] = None\n"
        "from writebehind.tools.cli import main\n"
        "sys.exit(main(['demo', '--rows', '10']))\n"
    )
    result = writebehind(code=code)
    assert result.returncode == 2
    assert "pip install 'writebehind[embedded]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_on_its_own_embedded_server() -> None:
    result = writebehind("demo", "--rows", "2000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "table writebehind_demo on an embedded PostgreSQL" in result.stdout
    assert summary(result.stdout)["in table"] == "2,000  OK"


def test_a_server_that_cannot_be_reached_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    result = writebehind("demo", "--dsn", f"host={tmp_path} connect_timeout=2", "--rows", "10")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {tmp_path}: ")
    assert "connection" in result.stderr
    assert "Traceback" not in result.stderr
