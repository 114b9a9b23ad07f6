"""`python -m writebehind bench` and `python -m benchmarks.research`: a quick run prints every
table and passes its checks, and the checks catch a run that misses a row or gives rows up."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import benchmarks.research
from benchmarks.research import coalesce, processes, settings, writers
from benchmarks.research.__main__ import main as research_main
from benchmarks.research.cpu import cpu_sample, cpu_use, server_pid, wait_reaped
from benchmarks.research.waits import measure_waits
from tests.conftest import named
from writebehind.tools.bench import command, throughput
from writebehind.tools.bench.raw import raw_copy
from writebehind.tools.bench.workload import CheckFailed, Workload, fingerprint
from writebehind.tools.bench.writer import supports_method, writebehind_run
from writebehind.tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "performance.md"
THROUGHPUT_HEADER = "| batch | side | rows/s | spread | × raw executemany | × raw COPY |"
WRITERS_HEADER = (
    "| side | rows/s | spread | × 1 connection | client CPU | server CPU | machine CPU "
    "| put() µs/row |"
)
COALESCE_HEADER = (
    "| side | rows written per 100 puts | writes | puts/s | spread | peak depth "
    "| peak rows waiting |"
)


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("writebehind", "bench", *args)


def research(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("benchmarks.research", *args)


def run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def table_rows(output: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table under ``header`` in ``output``."""
    lines = output.splitlines()
    start = lines.index(header) + 2  # the header, then the alignment row
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_quick_bench_prints_the_throughput_tables_and_passes_its_checks(
    dsn: str, table_name: str, db: psycopg.Connection[Any]
) -> None:
    result = bench("--quick", "--dsn", dsn, "--table", table_name)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "2,000 rows per run" in out
    for path in ("insert", "update"):
        assert f"## Throughput, {path} path (rows/s)" in out
    rows = table_rows(out, THROUGHPUT_HEADER)
    assert {"raw executemany", "raw COPY"} <= {row[1] for row in rows}
    assert {row[0] for row in rows} == {"100", "1000"}
    assert all(int(row[2].replace(",", "")) > 0 for row in rows), rows
    assert "## Socket waits per batch" not in out  # the research sections are not shipped
    assert "## Targets (same run)" in out
    assert "checks: every run left every row with its new value; no row was given up" in out
    assert "update path, batch 1000, run 1/1: " in result.stderr
    found = db.execute(
        named("SELECT count(*) FILTER (WHERE name LIKE 'user-%') FROM {}", table_name)
    ).fetchone()
    assert found == (2000,)


def test_quick_research_run_prints_every_table_and_passes_its_checks(
    dsn: str, table_name: str, db: psycopg.Connection[Any]
) -> None:
    result = research("--quick", "--dsn", dsn, "--table", table_name)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "2,000 rows per run" in out
    for path in ("insert", "update"):
        assert f"## Throughput, {path} path (rows/s)" in out
    rows = table_rows(out, THROUGHPUT_HEADER)
    sides = {row[1] for row in rows}
    assert {"raw executemany", "raw COPY"} <= sides
    assert {row[0] for row in rows} == {"100", "1000"}
    assert all(int(row[2].replace(",", "")) > 0 for row in rows), rows
    waits = table_rows(out, "| side | batch 100 | batch 1000 |")
    by_side = {row[0]: [float(cell.replace(",", "")) for cell in row[1:]] for row in waits}
    # executemany waits on the socket for every row; COPY staging a few times per batch.
    assert by_side["raw executemany"][0] >= 100
    assert by_side["raw COPY"][0] < 20
    threads = table_rows(out, "| CPU-bound threads | rows/s | spread | × idle |")
    assert [row[0] for row in threads] == ["none", "1", "2"]
    latency = table_rows(
        out, "| side | put p50 µs | put p99 µs | put max µs | RSS before MB | peak RSS MB |"
    )
    assert latency and all(float(row[1]) > 0 and float(row[5]) > 0 for row in latency)
    assert "processes on disjoint keys: through PgBouncer against direct" in out
    check_writers_table(out)
    check_coalesce_table(out, puts=settings.QUICK_COALESCE_PUTS)
    assert "## Targets (same run)" in out
    assert "checks: every run left every row with its new value; no row was given up" in out
    # Progress on standard error, one line per path, batch size and run.
    assert "update path, batch 1000, run 1/1: " in result.stderr

    # The table is left as the last run wrote it: every key, every row with its new value.
    found = db.execute(
        named(
            """SELECT count(*), count(*) FILTER (WHERE name LIKE 'user-%'),
                      count(*) FILTER (WHERE name LIKE 'old-%') FROM {}""",
            table_name,
        )
    ).fetchone()
    assert found == (2000, 2000, 0)
    template = db.execute("SELECT to_regclass(%s)", (f"{table_name}_old",)).fetchone()
    assert template == (None,)  # the template of old rows is dropped


def check_writers_table(out: str) -> None:
    """The writers section: four sides, each with a rate, the ratios against one connection
    (or writer) and the CPU each used; and its target judged."""
    assert "## Several writers (writebehind copy, update path, batch 5,000" in out
    rows = {row[0]: row for row in table_rows(out, WRITERS_HEADER)}
    assert list(rows) == [
        "raw COPY, 1 connection",
        "raw COPY, 2 connections",
        "writebehind copy, writers=1",
        "writebehind copy, writers=2",
        "writebehind copy, writers=1, puts before the clock",
        "writebehind copy, writers=2, puts before the clock",
    ]
    for label, row in rows.items():
        assert int(row[1].replace(",", "")) > 0, row
        assert float(row[4]) > 0, row  # this process used some CPU
        assert float(row[6]) > 0, row
        assert (row[7] == "—") == label.startswith("raw"), row
        if "writers=1" in label or "1 connection" in label:
            assert row[3] == "1.00", row  # each kind against its own side on one connection
    assert "put() is inside the timing" in out
    assert "- update path, batch 5000: writebehind copy writers=2 against writers=1 ≥ 1.4×: " in out


def check_coalesce_table(out: str, puts: int) -> None:
    """The coalesce section: coalescing writes no more rows than batches alone, and takes less
    room in the queue, by replacement and with a merge."""
    assert f"## Queue-wide coalescing (Zipf s=1.1 over 10,000 keys, {puts:,} puts" in out
    rows = {row[0]: row for row in table_rows(out, COALESCE_HEADER)}
    assert set(rows) == {
        "replace, coalesce=False",
        "replace, coalesce=True",
        "merge views add, coalesce=False",
        "merge views add, coalesce=True",
    }
    for how in ("replace", "merge views add"):
        plain, coalesced = rows[f"{how}, coalesce=False"], rows[f"{how}, coalesce=True"]
        # Zipf s=1.1: well under 100 rows per 100 puts even batch by batch.
        assert 0 < float(coalesced[1]) <= float(plain[1]) < 100, (plain, coalesced)
        waiting = int(coalesced[6].replace(",", "")), int(plain[6].replace(",", ""))
        assert waiting[0] <= waiting[1], (plain, coalesced)


def drop_last_row(run: Callable[..., Any]) -> Callable[..., Any]:
    """A side that leaves the last row unwritten (it keeps its old value)."""

    def short(dsn: str, table: str, rows: Sequence[dict[str, Any]], *args: Any) -> Any:
        return run(dsn, table, rows[:-1], *args)

    return short


@pytest.mark.parametrize(
    ("side", "function"),
    [
        ("raw executemany", "raw_executemany"),
        ("raw COPY", "raw_copy"),
        ("writebehind", "writebehind_run"),
    ],
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
    label, methods = side, list[str]()
    if side == "writebehind" and supports_method():
        label, methods = "writebehind auto (default)", ["--method", "auto"]
    status = main(
        [
            "bench",
            *("--dsn", dsn, "--table", table_name, "--rows", "300", "--batch-size", "100"),
            *("--runs", "1", "--path", "update", *methods),
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert f"FAILED: {label}, update path, batch 100, run 1: the table holds 300 rows" in err


def test_a_writers_run_that_misses_a_row_fails_the_benchmark(
    dsn: str,
    table_name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = writebehind_run

    def short(dsn: str, table: str, rows: Sequence[dict[str, Any]], *args: Any, **kw: Any) -> Any:
        return real(dsn, table, rows[:-1], *args, **kw)

    monkeypatch.setattr(writers, "writebehind_run", short)
    status = research_main(
        ["--dsn", dsn, "--table", table_name, "--rows", "300", "--only", "writers"]
        + ["--runs", "1"]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert "FAILED: writebehind copy, writers=" in err
    assert ", run 1: the table holds 300 rows" in err


def test_raw_copy_on_two_connections_writes_every_row(dsn: str, table_name: str) -> None:
    with Workload(dsn, table_name, 500) as workload:
        workload.prepare("update")
        seconds = writers.raw_copy_threads(dsn, table_name, workload.rows, 100, threads=2)
        assert seconds > 0
        workload.check()
        workload.prepare("update")  # one row short: caught
        writers.raw_copy_threads(dsn, table_name, workload.rows[:-1], 100, threads=2)
        with pytest.raises(CheckFailed):
            workload.check()


def test_a_coalesce_run_with_a_wrong_value_fails_the_benchmark(
    dsn: str,
    table_name: str,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = coalesce.expected_values

    def off_by_one(puts: Sequence[dict[str, Any]], merge: bool) -> dict[int, tuple[int, int]]:
        expected = real(puts, merge)
        score, views = expected[0]  # the hottest key
        expected[0] = (score, views + 1)
        return expected

    monkeypatch.setattr(coalesce, "expected_values", off_by_one)
    status = research_main(["--dsn", dsn, "--table", table_name, "--quick", "--only", "coalesce"])
    assert status == 1
    err = capsys.readouterr().err
    assert "FAILED: " in err
    assert ", run 1: 1 of " in err
    assert "keys wrong; key 0: the table holds (score, views) " in err
    found = db.execute("SELECT to_regclass(%s)", (f"{table_name}_coalesce",)).fetchone()
    assert found == (None,)  # dropped, even after a failed check


def test_skewed_puts_and_what_the_table_must_hold() -> None:
    keys = coalesce.zipf_keys(20_000)
    assert keys == coalesce.zipf_keys(20_000)  # seeded
    assert all(0 <= key < coalesce.KEYS for key in keys)
    share = keys.count(0) / len(keys)
    # Key 0's weight over the sum of 1 / k ** 1.1 for k = 1..10,000 (about 6.6): about 15%.
    assert 0.13 < share < 0.17, share
    assert keys.count(0) > keys.count(1) > keys.count(9)
    puts = [{"id": 5, "score": 0, "views": 1}, {"id": 7, "score": 1, "views": 2}]
    puts.append({"id": 5, "score": 2, "views": 3})
    assert coalesce.expected_values(puts, merge=False) == {5: (2, 3), 7: (1, 2)}
    assert coalesce.expected_values(puts, merge=True) == {5: (2, 4), 7: (1, 2)}


def test_the_server_cpu_of_a_run_is_counted(dsn: str, table_name: str) -> None:
    postmaster = server_pid(dsn)
    if postmaster is None:
        pytest.skip("the server is not on this machine, or the role may not see its directory")
    with Workload(dsn, table_name, 3000) as workload:
        workload.prepare("update")
        before = cpu_sample(postmaster)
        raw_copy(dsn, table_name, workload.rows, 1000)  # its backend ends with the call
        wait_reaped(postmaster)
        used = cpu_use(before, cpu_sample(postmaster))
    assert used.server is not None and used.server > 0
    assert used.client > 0 and used.machine > 0


def test_fingerprint_tells_a_stale_value_from_the_new_one(
    dsn: str, table_name: str, db: psycopg.Connection[Any]
) -> None:
    with Workload(dsn, table_name, 50) as workload:
        expected = workload.expected
        assert expected is not None
        assert (expected.rows, expected.score_sum) == (
            50,
            sum(row["score"] for row in workload.rows),
        )
        workload.check()  # the reference load left the new rows
        # A row whose jsonb column alone is stale: same count, same score sum, another md5.
        db.execute(
            named("""UPDATE {} SET attrs = attrs || '{{"visits": -1}}' WHERE id = 7""", table_name)
        )
        found = fingerprint(dsn, table_name)
        assert (found.rows, found.score_sum) == (expected.rows, expected.score_sum)
        assert found.md5 != expected.md5
        # The update path starts from old values everywhere; the insert path from nothing.
        workload.prepare("update")
        assert fingerprint(dsn, table_name).rows == 50
        assert fingerprint(dsn, table_name).md5 != expected.md5
        workload.prepare("insert")
        assert fingerprint(dsn, table_name).rows == 0


def test_socket_waits_are_counted_per_batch(dsn: str, table_name: str) -> None:
    with Workload(dsn, table_name, 400) as workload:
        rows = measure_waits(workload, [None], batch_sizes=[100], log=lambda _line: None)
    waits = {row.label: row.per_batch[100] for row in rows}
    assert set(waits) == {"raw executemany", "raw COPY", "writebehind"}
    assert waits["raw executemany"] >= 100  # at least one wait per row
    assert 1 <= waits["raw COPY"] < 20
    assert waits["writebehind"] >= 1


def test_writer_processes_report_rows_given_up(
    dsn: str, table_name: str, db: psycopg.Connection[Any]
) -> None:
    with Workload(dsn, table_name, 300) as workload:
        workload.prepare("update")
        # One key's new row is refused by the table: its process gives it up, the rest commit.
        refused = workload.rows[123]["name"]
        db.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT refuse_one CHECK (name <> {}) NOT VALID").format(
                sql.Identifier(table_name), sql.Literal(refused)
            )
        )
        seconds, given_up, retries, errors = processes.processes_run(
            workload, dsn, processes=2, batch_size=50, method=None
        )
    assert seconds > 0
    assert given_up == 1
    assert len(errors) == 1 and "refuse_one" in errors[0]
    found = db.execute(
        named("SELECT count(*) FILTER (WHERE name LIKE 'user-%') FROM {}", table_name)
    ).fetchone()
    assert found == (299,)


@dataclass(frozen=True)
class FakeAppResult:
    endpoint: str
    requests_per_second: float
    ratio_to_noop: float | None


def test_app_flag_calls_the_application_benchmark_and_prints_its_rows(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str | None, dict[str, Any]]] = []

    def run(dsn: str | None, **options: Any) -> list[FakeAppResult]:
        calls.append((dsn, options))
        return [FakeAppResult("no-op", 4012.5, 1.0), FakeAppResult("writebehind", 3600.0, 0.9)]

    fake = types.ModuleType("benchmarks.research.app")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.research.app", fake)
    monkeypatch.setattr(benchmarks.research, "app", fake, raising=False)
    status = research_main(["--dsn", dsn, "--only", "app", "--app-seconds", "1.5"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert calls == [(dsn, {"seconds": 1.5, "clients": 8, "workers": 2})]
    assert "| endpoint | requests per second | ratio to noop |" in out
    assert "| writebehind | 3,600 | 0.90 |" in out


def test_plot_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    status = research_main(["--plot", "out.png"])
    assert status == 2
    assert "pip install 'writebehind[plot]'" in capsys.readouterr().err


def test_options_that_cannot_run_are_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--table", "t" * 51]) == 2
    assert "--table must be a name of 1 to 50 bytes" in capsys.readouterr().err
    assert research_main(["--only", "waits", "--plot", "out.png"]) == 2
    assert "--plot draws the throughput section" in capsys.readouterr().err


def test_an_unreachable_server_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["bench", "--quick", "--dsn", f"host={tmp_path} port=1 connect_timeout=2"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("error: OperationalError: ")
    assert "Traceback" not in err


def test_plot_draws_a_png(dsn: str, table_name: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # in the test extra; skipped only where it is not
    target = tmp_path / "rows.png"
    status = research_main(
        [
            *("--dsn", dsn, "--table", table_name, "--rows", "200", "--runs", "1"),
            *("--batch-size", "50", "--batch-size", "100", "--only", "throughput"),
            *(("--method", "auto") if supports_method() else ()),
            *("--plot", str(target)),
        ]
    )
    assert status == 0
    assert target.read_bytes().startswith(b"\x89PNG")


def test_method_option(dsn: str, table_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--dsn", dsn, "--table", table_name, "--rows", "200", "--runs", "1"]
    args += ["--batch-size", "100", "--path", "insert"]
    status = main([*args, "--method", "copy"])
    captured = capsys.readouterr()
    if supports_method():
        assert status == 0, captured.err
        sides = {row[1] for row in table_rows(captured.out, THROUGHPUT_HEADER)}
        assert sides == {"raw executemany", "raw COPY", "writebehind copy"}
    else:  # a PostgresUpsert with one write path: refused before anything runs
        assert status == 2
        assert "--method copy: this writebehind's PostgresUpsert has no method=" in captured.err


def test_turns_give_every_side_the_first_and_last_slot() -> None:
    sides = ["a", "b", "c"]
    orders = [throughput.turns(sides, run) for run in range(6)]
    assert all(sorted(order) == sides for order in orders)
    assert {order[0] for order in orders} == set(sides)
    assert {order[-1] for order in orders} == set(sides)


def test_docs_state_the_command_and_its_defaults() -> None:
    text = " ".join(DOCS.read_text().split())
    assert "python -m writebehind bench" in text
    assert f"{command.DEFAULT_ROWS:,} rows per run" in text
    assert f"medians of {command.DEFAULT_RUNS} runs" in text
    assert "load average" in text


JOURNAL_THROUGHPUT_HEADER = "| side | rows/s | spread | × no journal | × raw COPY |"
JOURNAL_LATENCY_HEADER = "| side | puts/s kept | p50 µs | p99 µs | p99.9 µs | max µs |"
JOURNAL_REPLAY_HEADER = "| journal | side | rows/s | spread | × raw COPY |"
JOURNAL_STARTUP_HEADER = "| what | seconds | spread | records/s | MiB/s |"


def test_journal_section_measures_every_part_checks_it_and_deletes_its_journals(
    dsn: str,
    table_name: str,
    db: psycopg.Connection[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the journals go
    status = research_main(
        [
            *("--dsn", dsn, "--table", table_name, "--only", "journal", "--runs", "1"),
            *("--rows", "400", "--replay-rows", "1000", "--journal-gib", "0.002"),
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert status == 0, captured.err
    assert "## Durable journal (default method; 1,000 rows replayed, a 0.002 GiB journal" in out
    assert "Journals on " in out and "unknown (df -T failed)" not in out
    throughput = {row[0]: row for row in table_rows(out, JOURNAL_THROUGHPUT_HEADER)}
    assert list(throughput) == [
        "raw executemany",
        "raw COPY",
        "no journal",
        'sync="process"',
        'sync="interval"',
        'sync="always"',
        "no journal, put_many of 100",
        'sync="always", put_many of 100',
    ]
    assert all(int(row[1].replace(",", "")) > 0 for row in throughput.values())
    assert throughput["no journal"][3] == "1.00" and throughput["raw COPY"][4] == "1.00"
    latency = {
        row[0]: [float(cell.replace(",", "")) for cell in row[1:]]
        for row in table_rows(out, JOURNAL_LATENCY_HEADER)
    }
    assert list(latency) == ["no journal", 'sync="process"']
    for puts, p50, p99, p999, most in latency.values():
        assert puts > 0 and 0 < p50 <= p99 <= p999 <= most + 0.5  # max is shown rounded
    replay = [(row[0].split(" (")[0], row[1]) for row in table_rows(out, JOURNAL_REPLAY_HEADER)]
    assert replay == [
        ("distinct keys", "raw COPY"),
        ("distinct keys", "replay (writebehind)"),
        ("repeated keys", "raw COPY"),
        ("repeated keys", "replay (writebehind)"),
    ]
    assert "| distinct keys (1,000 keys) |" in out  # the keys the journal's rows touch
    startup = table_rows(out, JOURNAL_STARTUP_HEADER)
    assert [row[0] for row in startup] == [
        "start() to the first replayed batch committed",
        "read and decode every record (no database)",
    ]
    # Seconds to two decimals: a tiny journal's first batch may be committed within 5 ms.
    assert float(startup[0][1]) >= 0 and float(startup[1][1]) >= 0
    for target in (
        'update path, batch 1000: sync="process" against no journal ≥ 0.8×: ',
        'put() p99 ≤ 100 µs with sync="process": ',
        "replay (distinct keys, update path) ≥ 100,000 rows/s: ",
        "replay (repeated keys, update path) ≥ 100,000 rows/s: ",
        "start-up with a 0.002 GiB journal: first replayed batch committed < 10 s: ",
    ):
        assert f"- {target}" in out
    assert "journal replay, repeated keys, run 1/1: " in captured.err
    # Every journal deleted, every table of its own dropped; the workload's table left written.
    assert list(tmp_path.iterdir()) == []
    for suffix in ("_replay", "_repeated", "_large", "_replay_old"):
        found = db.execute("SELECT to_regclass(%s)", (f"{table_name}{suffix}",)).fetchone()
        assert found == (None,), suffix
    assert fingerprint(dsn, table_name).rows == 400
