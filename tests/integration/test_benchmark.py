"""The throughput benchmark runs, at a tiny size, and its check catches a run that misses rows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from benchmarks import throughput
from tests.conftest import named

SCRIPT = Path(throughput.__file__).resolve()
README = SCRIPT.parents[1] / "README.md"
HEADER = "| batch | raw psycopg rows/s | raw spread | writebehind rows/s | wb spread | ratio |"


def run_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_smoke_run_writes_and_checks_every_row(
    dsn: str, table_name: str, db: psycopg.Connection[Any]
) -> None:
    # maxsize below the row count: producers meet backpressure, as in a full-size run.
    result = run_benchmark(
        *("--dsn", dsn, "--table", table_name, "--rows", "2000"),
        *("--batch-size", "100", "--runs", "2", "--maxsize", "500"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert HEADER in lines, result.stdout
    rows = [line for line in lines if line.startswith("| 100 |")]
    assert len(rows) == 1, result.stdout
    cells = rows[0].strip("|").split("|")
    assert len(cells) == 6, rows[0]
    assert all(cell.strip() for cell in cells), rows[0]
    assert "medians of 2 runs per side" in result.stdout
    # Both sides' runs reported, each side first once.
    assert "run 1/2: raw psycopg" in result.stderr
    assert "run 2/2: writebehind" in result.stderr

    # The table is left as the last run wrote it: every key, every row with its new value.
    found = db.execute(
        named(
            """SELECT count(*), count(*) FILTER (WHERE name LIKE 'user-%'),
                      count(*) FILTER (WHERE name LIKE 'old-%') FROM {}""",
            table_name,
        )
    ).fetchone()
    assert found == (2000, 2000, 0)


def test_odd_run_count_is_refused() -> None:
    result = run_benchmark("--runs", "3")
    assert result.returncode == 2
    assert "--runs must be even (got 3)" in result.stderr


def test_fingerprint_tells_a_stale_value_from_the_new_one(
    dsn: str, table_name: str, db: psycopg.Connection[Any]
) -> None:
    now = datetime.now(timezone.utc)
    rows = throughput.make_rows(50, seed=1, prefix=throughput.NEW_PREFIX, updated=now)
    throughput.rebuild(dsn, table_name, rows)
    expected = throughput.fingerprint(dsn, table_name)
    assert (expected.rows, expected.score_sum) == (50, sum(row["score"] for row in rows))

    # A row whose jsonb column alone is stale: same count, same score sum, another md5.
    db.execute(
        named("""UPDATE {} SET attrs = attrs || '{{"visits": -1}}' WHERE id = 7""", table_name)
    )
    found = throughput.fingerprint(dsn, table_name)
    assert (found.rows, found.score_sum) == (expected.rows, expected.score_sum)
    assert found.md5 != expected.md5


def drop_last_row(run: Callable[..., float]) -> Callable[..., float]:
    """A side that leaves the last row unwritten (it keeps its old value)."""

    def short(dsn: str, table: str, rows: Sequence[dict[str, Any]], *args: Any) -> float:
        return run(dsn, table, rows[:-1], *args)

    return short


@pytest.mark.parametrize(
    ("side", "function"), [("raw psycopg", "raw_loop"), ("writebehind", "writebehind_run")]
)
def test_a_run_that_misses_a_row_fails_the_benchmark(
    dsn: str,
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    side: str,
    function: str,
) -> None:
    monkeypatch.setattr(throughput, function, drop_last_row(getattr(throughput, function)))
    status = throughput.main(
        ["--dsn", dsn, "--table", table_name, "--rows", "300", "--batch-size", "100", "--runs", "2"]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert f"FAILED: {side}, batch 100, run 1: the table holds 300 rows" in err


def test_readme_states_the_scripts_defaults() -> None:
    section = README.read_text().split("\n## Performance\n", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())
    assert "python benchmarks/throughput.py" in text
    assert f"writes {throughput.DEFAULT_ROWS:,} rows" in text
    assert f"runs {throughput.DEFAULT_RUNS} times per batch size" in text
