"""drain_on_signals(): a process stopped with SIGTERM writes its queue, on a real PostgreSQL.

Each scenario runs a script in a process of its own that puts rows and waits to be signalled by
the test; the rows are held back, by a large flush_interval (in memory) or by a table the test
locks (a write in flight), until the signal has arrived. The steps are synchronised on the lines
the script prints and on pg_locks, never on sleeps.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import create, named, select, wait_until
from writebehind import drain_on_signals

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROWS = 1000

SCRIPT = textwrap.dedent(
    """
    import atexit, faulthandler, signal, sys, time
    faulthandler.register(signal.SIGUSR1)  # the test asks for the stacks of a script that hangs
    from writebehind import PostgresUpsert, WriteBehindQueue, drain_on_signals

    dsn, table, mode, batch_size, flush_interval = sys.argv[1:6]

    def application_handler(signum, frame):
        print("application handler", flush=True)
        sys.exit(3)

    if mode == "application":
        signal.signal(signal.SIGTERM, application_handler)
    # atexit runs its hooks last registered first: this line comes before the queues' drain
    atexit.register(print, "at exit", flush=True)
    if mode != "plain":
        for _ in range(2):  # a second call changes nothing
            print("draining on", [s.name for s in drain_on_signals()], flush=True)
    wb = WriteBehindQueue(
        PostgresUpsert(dsn, table, "k"),
        registry=None,
        batch_size=int(batch_size),
        flush_interval=float(flush_interval),
        shutdown_timeout=60,
    )
    for i in range(ROWS):
        wb.put({"k": i, "v": i})
    print("put done", flush=True)
    if mode != "ends":
        # Until a signal ends the process. Not one endless wait: the kernel may hand the signal
        # to another thread, and CPython runs its handler in the main thread only once that
        # thread runs again, which a wait without a timeout never does.
        while True:
            time.sleep(0.05)
    """
).replace("ROWS", str(ROWS))

IN_MEMORY = ("100000", "3600")  # batch_size, flush_interval: nothing is written before exit
WRITING = ("100", "0.05")  # the worker writes at once (and waits on a locked table)


@pytest.fixture
def items(db: psycopg.Connection[Any], table_name: str) -> str:
    create(db, table_name, "k int PRIMARY KEY, v int NOT NULL")
    return table_name


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "signalled.py"
    path.write_text(SCRIPT)
    return path


@contextlib.contextmanager
def running(
    script: Path, dsn: str, table: str, mode: str, holding: tuple[str, str]
) -> Iterator[subprocess.Popen[str]]:
    """The script, stderr merged into stdout so that the test reads both in order."""
    proc = subprocess.Popen(
        [sys.executable, str(script), dsn, table, mode, *holding],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # Still running, so the test failed: show where the script hangs before it goes.
            proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)  # time to write the stacks; it does not end by itself
            proc.kill()
            print(rest(proc))
        proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.close()


def expect(proc: subprocess.Popen[str], text: str) -> list[str]:
    """Read the script's lines until one contains ``text``; the lines read, for messages."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if text in line:
            return seen
    pytest.fail(f"the script ended (status {proc.wait()}) without printing {text!r}: {seen}")


def rest(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.read()


def written(db: psycopg.Connection[Any], table: str) -> tuple[Any, ...]:
    """(rows, sum of v) in the table."""
    return select(db, table, "count(*), coalesce(sum(v), 0)")[0]


ALL_ROWS = (ROWS, sum(range(ROWS)))


@contextlib.contextmanager
def locked(dsn: str, table: str) -> Iterator[psycopg.Connection[Any]]:
    """The table locked against writes (reads pass) until the block ends or the test rolls
    back the returned connection."""
    with psycopg.connect(dsn) as locker:
        locker.execute(named("LOCK TABLE {} IN SHARE MODE", table))
        try:
            yield locker
        finally:
            locker.rollback()


def a_write_waits_on(db: psycopg.Connection[Any], table: str) -> bool:
    query = (
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        " AND relation = (SELECT oid FROM pg_class WHERE relname = %s)"
    )
    row = db.execute(query, (table,)).fetchone()
    return row is not None and row[0] > 0


def test_with_drain_on_signals_sigterm_writes_every_row_and_exits_143(
    dsn: str, db: psycopg.Connection[Any], items: str, script: Path
) -> None:
    with running(script, dsn, items, "drain", IN_MEMORY) as proc:
        lines = expect(proc, "put done")
        assert lines.count("draining on ['SIGTERM']") == 2, lines  # idempotent
        assert written(db, items) == (0, 0)  # every row is still in memory
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, rest(proc)
        assert "at exit" in rest(proc)
    assert written(db, items) == ALL_ROWS


def test_without_drain_on_signals_sigterm_loses_the_rows_in_memory(
    dsn: str, db: psycopg.Connection[Any], items: str, script: Path
) -> None:
    # Today's behaviour, and the reason for drain_on_signals(): SIGTERM's default action kills
    # the process, no exit hook runs, and every row still in memory is lost.
    with running(script, dsn, items, "plain", IN_MEMORY) as proc:
        expect(proc, "put done")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
        assert "at exit" not in rest(proc)
    assert written(db, items) == (0, 0)


def test_sigterm_during_a_write_waits_for_it_and_for_the_rows_behind_it(
    dsn: str, db: psycopg.Connection[Any], items: str, script: Path
) -> None:
    with locked(dsn, items) as locker, running(script, dsn, items, "drain", WRITING) as proc:
        expect(proc, "put done")
        assert wait_until(lambda: a_write_waits_on(db, items)), "no write waited on the lock"
        proc.send_signal(signal.SIGTERM)
        expect(proc, "at exit")  # the exit hook drains now, behind the lock
        assert proc.poll() is None
        locker.rollback()
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, rest(proc)
    assert written(db, items) == ALL_ROWS


def test_a_second_sigterm_while_draining_kills_at_once(
    dsn: str, db: psycopg.Connection[Any], items: str, script: Path
) -> None:
    with locked(dsn, items), running(script, dsn, items, "drain", WRITING) as proc:
        expect(proc, "put done")
        assert wait_until(lambda: a_write_waits_on(db, items)), "no write waited on the lock"
        proc.send_signal(signal.SIGTERM)
        expect(proc, "at exit")
        proc.send_signal(signal.SIGTERM)  # the operator insists: the rows are given up
        assert proc.wait(timeout=30) == -signal.SIGTERM, rest(proc)
    # The batch in flight was in the server's hands (one autocommit statement, waiting on the
    # lock) and may still commit; the rows behind it are lost.
    assert written(db, items)[0] in (0, int(WRITING[0]))


def test_sigterm_while_a_normal_exit_drains_lets_the_drain_finish(
    dsn: str, db: psycopg.Connection[Any], items: str, script: Path
) -> None:
    # The script ends by itself; the exit hook waits on the lock; SIGTERM arrives then.
    with locked(dsn, items) as locker, running(script, dsn, items, "ends", WRITING) as proc:
        expect(proc, "at exit")
        assert wait_until(lambda: a_write_waits_on(db, items)), "no write waited on the lock"
        proc.send_signal(signal.SIGTERM)
        expect(proc, "SIGTERM received while the exit hook drains")
        assert proc.poll() is None
        locker.rollback()
        assert proc.wait(timeout=60) == 0, rest(proc)
    assert written(db, items) == ALL_ROWS


def test_an_application_handler_is_kept_and_runs_instead(
    dsn: str, db: psycopg.Connection[Any], items: str, script: Path
) -> None:
    with running(script, dsn, items, "application", IN_MEMORY) as proc:
        lines = expect(proc, "put done")
        assert "draining on []" in lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 3, rest(proc)  # the application's sys.exit(3)
        output = rest(proc)
        assert "application handler" in output
    # It exits normally, so the exit hook drains the rows anyway.
    assert written(db, items) == ALL_ROWS


def test_a_child_forked_afterwards_starts_with_the_default_action() -> None:
    code = textwrap.dedent(
        """
        import os, signal
        from writebehind import drain_on_signals

        drain_on_signals()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        print("parent", signal.getsignal(signal.SIGTERM).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["child 0", "parent _exit_on_signal"]


def test_a_call_from_another_thread_raises_and_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            drain_on_signals()
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=call, name="not-main")
    thread.start()
    thread.join()
    assert [type(e) for e in raised] == [RuntimeError]
    assert "main thread" in str(raised[0]) and "'not-main'" in str(raised[0])
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize(
    ("signals", "error", "names"),
    [
        (signal.SIGTERM, TypeError, "iterable of signal.Signals"),
        ("SIGTERM", TypeError, "iterable of signal.Signals"),
        (None, TypeError, "iterable of signal.Signals"),
        ([signal.SIGTERM, "SIGHUP"], TypeError, "'SIGHUP' (str)"),
        ([True], TypeError, "True (bool)"),
        ([signal.SIGTERM, 12345], ValueError, "12345 is not a signal"),
        ([signal.SIGTERM, signal.SIGKILL], ValueError, "SIGKILL cannot be caught"),
    ],
)
def test_bad_signals_are_refused_by_name_and_nothing_is_installed(
    signals: Any, error: type[Exception], names: str
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(error, match="signals") as raised:
        drain_on_signals(signals)
    assert names in str(raised.value)
    assert signal.getsignal(signal.SIGTERM) == before


def test_an_ignored_signal_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    before = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        with caplog.at_level("INFO", logger="writebehind"):
            assert drain_on_signals([signal.SIGUSR1]) == ()
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert "SIGUSR1 left alone: the application ignores it (SIG_IGN)" in caplog.text
