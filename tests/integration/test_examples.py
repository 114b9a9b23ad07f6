"""Every example runs, on the test server, so that none rots."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import named, wait_until, waiting_on_a_lock

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLES,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def clean(db: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """Tables an example creates, dropped after the test."""
    tables: list[str] = []
    yield tables
    for table in tables:
        db.execute(named("DROP TABLE IF EXISTS {}", table))


def test_quickstart(dsn: str, clean: list[str]) -> None:
    clean.append("sensor_latest")
    result = run_example("quickstart.py", "--dsn", dsn, "--rows", "3000")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every sensor holds its last reading" in result.stdout
    assert "persisted 3000, failed 1 ['broken']" in result.stdout


@pytest.mark.shares("last_visits")  # the example's table: workers sharing a server take turns
def test_flask_app_self_check(dsn: str, clean: list[str]) -> None:
    clean.append("last_visits")
    result = run_example("flask_app.py", "--dsn", dsn, "--requests", "500")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "table last_visits: 100 pages, 500 views" in result.stdout
    assert "OK: every page holds its view count and last visit" in result.stdout


def summary_value(output: str, label: str) -> str:
    found = re.search(rf"^{label}\s+(.+)$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def megabytes(text: str) -> float:
    return float(text.removesuffix(" MB"))


def test_batch_import_keeps_memory_flat(dsn: str, tmp_path: Path, clean: list[str]) -> None:
    clean.append("readings")
    runs = {}
    for rows in (20_000, 100_000):
        csv_path = tmp_path / f"readings-{rows}.csv"
        result = run_example(
            "batch_import.py", "--dsn", dsn, "--csv", str(csv_path), "--rows", f"{rows}"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert csv_path.exists()
        refused = rows // 10_007
        assert summary_value(result.stdout, "in table") == f"{rows - refused:,}  OK"
        assert summary_value(result.stdout, "refused").startswith(f"{refused:,} ")
        rejects = csv_path.with_name(csv_path.stem + ".rejects.csv").read_text().splitlines()
        assert len(rejects) == 1 + refused and all(",-999.0," in line for line in rejects[1:])
        assert "100%" in result.stderr  # tqdm's bar reached the end
        runs[rows] = megabytes(summary_value(result.stdout, "peak memory"))
    # Five times the rows, about the same memory: the queue bounds what is held (holding every
    # row would add tens of megabytes).
    assert runs[100_000] - runs[20_000] < 15, runs


def test_batch_import_without_tqdm_names_the_extra(dsn: str, tmp_path: Path) -> None:
    blocker = tmp_path / "tqdm.py"
    blocker.write_text("raise ImportError('tqdm is not installed')\n")
    result = run_example("batch_import.py", "--dsn", dsn, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert "pip install 'writebehind[progress]'" in result.stderr


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_server_serves_what_the_dashboard_queries(dsn: str, clean: list[str]) -> None:
    from tests.unit.test_dashboard import queried_names

    clean.append("metrics_demo")
    process = subprocess.Popen(
        [
            sys.executable,
            "metrics_server.py",
            "--dsn",
            dsn,
            "--port",
            "0",
            "--rate",
            "5000",
            "--rows",
            "2000",
        ],
        cwd=EXAMPLES,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default, even where the tests run with SIGINT ignored (started with `&` by a
        # shell without job control), which Python would keep from raising KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", first).group(1))  # type: ignore[union-attr]
        assert process.stdout.readline().startswith("put 2000 rows")  # all put and flushed
        samples = scrape(port)
        queue = '{queue="metrics_demo"}'
        assert samples[f"writebehind_enqueued_total{queue}"] == 2000
        assert samples[f"writebehind_persisted_total{queue}"] == 1996
        assert samples[f"writebehind_failed_total{queue}"] == 4
        assert samples[f"writebehind_queue_depth{queue}"] == 0
        served = {name.partition("{")[0] for name in samples}
        assert queried_names() <= served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert "stopped: Metrics(total_enqueued=2000, total_persisted=1996, total_failed=4" in out


@pytest.mark.shares("last_visits")  # the example's table: workers sharing a server take turns
def test_flask_app_under_gunicorn_preload_with_multiprocess_metrics(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, clean: list[str]
) -> None:
    """Two workers forked from a preloaded app each build their own queue; /metrics adds
    them up; rows still queued when gunicorn is stopped are written by each worker's exit.
    Visits of the same pages posted from several threads at once, through both workers'
    queues, are all counted."""
    clean.append("last_visits")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"WRITEBEHIND_DSN": dsn, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    init = run_example("-m", "flask", "--app", "flask_app.py", "init-db", env=env)
    assert init.returncode == 0, init.stderr
    check = run_example("-m", "flask", "--app", "flask_app.py", "writebehind", "check", env=env)
    assert check.returncode == 0 and "table 'last_visits' is ready" in check.stdout
    db.execute("TRUNCATE last_visits")

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:0",
            "--config",
            "gunicorn.conf.py",
            "flask_app:app",
        ],
        cwd=EXAMPLES,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    threads, posts, pages = 4, 50, 10  # each round: 200 visits, 20 of each page
    try:
        assert server.stderr is not None
        port = booted = 0
        for line in server.stderr:
            if found := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line):
                port = int(found.group(1))
            booted += "Booting worker" in line
            if booted == 2:
                break
        assert port, "gunicorn did not start"

        def post(thread: int) -> None:
            for i in range(posts):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/visits/p{i % pages}",
                    headers={"Referer": f"https://example.com/{thread}/{i}"},
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=10) as answer:
                    assert answer.status == 202

        def post_from_threads() -> None:
            with ThreadPoolExecutor(threads) as pool:
                for done in [pool.submit(post, thread) for thread in range(threads)]:
                    done.result()  # raises what the thread raised

        post_from_threads()
        persisted = 'writebehind_persisted_total{queue="last_visits"}'
        samples: dict[str, float] = {}

        def all_written() -> bool:
            samples.update(scrape(port))
            return samples.get(persisted, 0) >= threads * posts

        assert wait_until(all_written, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as answer:
            assert answer.status == 200 and json.load(answer)["healthy"] is True
        assert samples[persisted] == threads * posts
        assert samples['writebehind_enqueued_total{queue="last_visits"}'] == threads * posts
        assert samples['writebehind_queue_depth{queue="last_visits"}'] == 0
        post_from_threads()  # then stop at once: each worker drains at its exit
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=120)
    assert server.returncode == 0, log
    visits = db.execute("SELECT page, views, referrer FROM last_visits ORDER BY page").fetchall()
    assert [(page, views) for page, views, _ in visits] == [
        (f"p{i}", 2 * threads * posts // pages) for i in range(pages)
    ]
    # The referrer is the last one written: one of that page's visits.
    assert all(
        int(referrer.rpartition("/")[2]) % pages == int(page[1:]) for page, _, referrer in visits
    )


@pytest.mark.shares("last_visits")  # the example's table: workers sharing a server take turns
def test_a_killed_gunicorn_worker_loses_no_visit_and_its_replacement_counts_each_once(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path, clean: list[str]
) -> None:
    """The Flask example with a journal under gunicorn: 15 visits written, then visits accepted
    while the table is locked (the write of 30 waits on the lock, 30 more wait in the worker), then
    the worker is killed with SIGKILL. gunicorn starts another, which shares the journal
    directory: as it boots it replays the dead worker's journal, all 60, and its claim
    keeps the dead worker's write of 30, still waiting on the lock in the server, from
    committing once the lock goes (first in line). Every visit is counted once."""
    clean.append("last_visits")
    env = {"WRITEBEHIND_DSN": dsn, "WRITEBEHIND_JOURNAL": str(tmp_path / "journal")}
    init = run_example("-m", "flask", "--app", "flask_app.py", "init-db", env=env)
    assert init.returncode == 0, init.stderr
    db.execute("TRUNCATE last_visits")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--bind",
            "127.0.0.1:0",
            "--config",
            "gunicorn.conf.py",  # its post_worker_init starts the queue as a worker boots
            "flask_app:app",
        ],
        cwd=EXAMPLES,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    port = 0
    booted = threading.Event()

    def read_log() -> None:
        nonlocal port
        assert server.stderr is not None
        for line in server.stderr:
            if found := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line):
                port = int(found.group(1))
            if found := re.search(r"Booting worker with pid: (\d+)", line):
                workers.append(int(found.group(1)))
                booted.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()

    def post(page: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/visits/{page}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202

    try:
        assert wait_until(lambda: bool(port and workers), timeout=60), "gunicorn did not start"
        for i in range(15):
            post(f"p{i % 3}")
        # Written: the worker's progress row holds them, and its next write expects that row.
        assert wait_until(lambda: total_views(db) == 15, timeout=30)
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE last_visits IN SHARE MODE")  # writes wait
            for i in range(30):
                post(f"p{i % 3}")
            assert wait_until(lambda: waiting_on_a_lock(db), timeout=30)  # a write under way
            for i in range(30, 60):
                post(f"p{i % 3}")  # these wait in the worker: its write holds only the first
            os.kill(workers[0], signal.SIGKILL)
            assert wait_until(lambda: len(workers) == 2, timeout=60), "no new worker"
            locker.rollback()  # the lock goes: the dead worker's write may reach its commit
        # Replayed as the new worker booted, before any request to it.
        assert wait_until(lambda: total_views(db) >= 75, timeout=60)
        post("p0")
        assert wait_until(lambda: total_views(db) >= 76, timeout=60)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
        reader.join(timeout=30)  # it reads the log to its end
        assert server.stderr is not None
        server.stderr.close()
    visits = dict(db.execute("SELECT page, views FROM last_visits").fetchall())
    assert visits == {"p0": 26, "p1": 25, "p2": 25}


def total_views(db: psycopg.Connection[Any]) -> int:
    found = db.execute("SELECT coalesce(sum(views), 0) FROM last_visits").fetchone()
    return int(found[0]) if found else 0
