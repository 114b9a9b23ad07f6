"""A queue with a journal, over a sink that keeps its table and progress in memory: what is
recorded, what each write marks as done, and what the next queue replays."""

from __future__ import annotations

import errno
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.fakes import POISON, ProgressSink, row
from writebehind import Journal, Params, QueueFull, WriteBehindQueue
from writebehind._sink import ProgressMark
from writebehind.journal.keeper import decode_record
from writebehind.journal.segments import SegmentReader, SegmentWriter, take_over

Failure = tuple[list[Mapping[str, Any]], BaseException]


class CheckedSink(ProgressSink):
    """Checks each write's marks: every record a mark calls done must be written (now or
    before) or refused. Rows are put with ids 1, 2, 3... in order, so id = sequence number;
    with ``lanes`` writers, record ``seq`` is in lane ``seq % lanes``."""

    def __init__(self, lanes: int = 1) -> None:
        super().__init__()
        self.lanes = lanes
        self.committed: set[int] = set()
        self.refusable: set[int] = set()

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        rows = list(rows)
        ids = {key for key, _ in rows}
        if any(value == POISON for _, value in rows):
            super().write(rows, progress)  # raises, nothing recorded
        for source, applied, extra, *_ in progress:
            lane = int(source.rsplit("/", 1)[1])
            covered = {s for s in range(1, applied + 1) if s % self.lanes == lane} | set(extra)
            wrong = covered - self.committed - ids - self.refusable
            if wrong:
                self.violations.append(f"{source} marked {sorted(wrong)} done, not written")
        super().write(rows, progress)
        self.committed |= ids


@pytest.fixture
def checked() -> Iterator[CheckedSink]:
    sink = CheckedSink()
    yield sink
    assert not sink.violations


def queue(sink: ProgressSink, root: Path, failures: list[Failure], **options: Any) -> Any:
    options.setdefault("registry", None)
    options.setdefault("retry_backoff", 0.001)
    options.setdefault("retry_backoff_max", 0.01)
    options.setdefault("flush_interval", 60.0)
    options.setdefault("on_failure", lambda rows, error: failures.append((rows, error)))
    return WriteBehindQueue(sink, journal=Journal(root), **options)


def instances(root: Path, name: str = "fake") -> list[Path]:
    parent = root / name
    if not parent.exists():
        return []
    return sorted(p for p in parent.iterdir() if not p.name.startswith("."))


def abandon(wb: WriteBehindQueue, sink: ProgressSink) -> None:
    """End ``wb`` as the exit deadline would, leaving what is unwritten in its journal."""
    wb.abandon()
    if sink.gate is not None:
        sink.gate.set()
    wb.close(timeout=10)
    sink.gate = None
    sink.closed = 0  # the next queue writes through the same table


def test_put_returns_once_the_row_is_a_record_in_the_journal(
    tmp_path: Path, checked: CheckedSink, failures: list[Failure]
) -> None:
    checked.gate = threading.Event()
    wb = queue(checked, tmp_path, failures)
    wb.put(row(1, "a"))
    wb.put_many([row(2, "b"), row(3, "c")])
    [directory] = instances(tmp_path)
    records = list(SegmentReader(directory, repair=False).records())
    assert [r.seq for r in records] == [1, 2, 3]
    replayed = [decode_record(r.payload) for r in records]
    assert [(r.key, r.params) for r in replayed] == [(1, (1, "a")), (2, (2, "b")), (3, (3, "c"))]
    checked.gate.set()
    assert wb.flush(10)
    assert checked.progress == {f"fake/{directory.name}/0": (3, frozenset())}
    assert wb.metrics().journal_bytes > 0
    wb.close(10)
    assert instances(tmp_path) == []  # all written: the journal is gone
    assert checked.progress == {}  # and its progress rows
    assert wb.metrics().journal_bytes == 0


def test_rows_left_unwritten_are_replayed_once_by_the_next_queue(
    tmp_path: Path, checked: CheckedSink, failures: list[Failure]
) -> None:
    wb = queue(checked, tmp_path, failures, batch_size=10)
    wb.put_many([row(i, f"v{i}") for i in range(1, 26)])
    assert wb.flush(10)
    checked.gate = threading.Event()
    checked.write_started.clear()
    wb.put_many([row(i, f"v{i}") for i in range(26, 41)])  # 26-35 taken, 36-40 waiting
    assert checked.write_started.wait(10)
    abandon(wb, checked)
    assert wb.metrics().total_abandoned == 5
    assert failures == []  # kept in the journal, not handed over
    [dead] = instances(tmp_path)

    again = queue(checked, tmp_path, failures, batch_size=10)
    again.put(row(41, "v41"))
    assert again.flush(10)
    applied = [key for key, _ in checked.applied]
    assert sorted(applied) == list(range(1, 42))  # each row once
    assert checked.table == {i: f"v{i}" for i in range(1, 42)}
    assert again.metrics().total_replayed == 5
    again.close(10)
    assert instances(tmp_path) == []
    # The replayed journal's progress rows stay, claimed by the queue that replayed it.
    assert {source.split("/")[1] for source in checked.progress} == {dead.name}


def test_replayed_rows_are_written_before_the_rows_put_since(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    sink.gate = threading.Event()
    wb = queue(sink, tmp_path, failures)
    wb.put(row(1, "old"))
    wb.flush(timeout=0.01)  # due now
    assert sink.write_started.wait(10)
    wb.put(row(2, "old"))
    abandon(wb, sink)
    assert sink.table == {1: "old"}

    again = queue(sink, tmp_path, failures)
    again.put(row(2, "new"))
    assert again.flush(10)
    assert sink.table == {1: "old", 2: "new"}
    assert [value for key, value in sink.applied if key == 2] == ["old", "new"]
    again.close(10)


def test_a_refused_row_in_a_batch_marks_only_what_was_written(
    tmp_path: Path, checked: CheckedSink, failures: list[Failure]
) -> None:
    checked.refusable = {3, 11}
    wb = queue(checked, tmp_path, failures, batch_size=16)
    wb.put_many([row(i, POISON if i in checked.refusable else i) for i in range(1, 17)])
    assert wb.flush(10)
    assert sorted(r["id"] for rows, _ in failures for r in rows) == [3, 11]
    [(applied, extra)] = checked.progress.values()
    # A row refused after the last commit of its batch is done, but not recorded as such: a
    # replay would try it again (and hand it over again), never write it twice.
    assert set(range(1, applied + 1)) | extra >= set(range(1, 17)) - {3, 11}
    wb.close(10)


@pytest.mark.parametrize("writers", [1, 2])
def test_coalesced_and_laned_rows_mark_only_what_was_written(
    tmp_path: Path, failures: list[Failure], writers: int
) -> None:
    sink = CheckedSink(lanes=writers)
    sink.refusable = {7}
    wb = queue(sink, tmp_path, failures, batch_size=4, coalesce=True, writers=writers)
    sink.gate = threading.Event()
    # Ids are sequence numbers; values repeat keys through the extra rows' values only.
    for i in range(1, 41):
        wb.put(row(i, POISON if i == 7 else i))
    sink.gate.set()
    assert wb.flush(10)
    assert not sink.violations
    assert len(sink.table) == 39
    wb.close(10)
    assert instances(tmp_path) == []


def test_a_hot_key_combined_while_it_waits_is_replayed_at_its_last_value(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    sink.gate = threading.Event()
    wb = queue(sink, tmp_path, failures, coalesce=True)
    wb.put(row("busy", 0))
    wb.flush(timeout=0.01)
    assert sink.write_started.wait(10)
    for value in range(1, 101):
        wb.put(row("hot", value))
    wb.put(row("cold", 1))
    abandon(wb, sink)
    again = queue(sink, tmp_path, failures, coalesce=True)
    again.start()  # replay begins when the queue starts: start(), or its first put
    assert again.flush(10)
    assert sink.table == {"busy": 0, "hot": 100, "cold": 1}
    again.close(10)
    assert instances(tmp_path) == []


def test_a_full_journal_holds_put_back_like_a_full_queue(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    sink.gate = threading.Event()
    options = Journal(tmp_path, max_bytes=8192, segment_bytes=4096)
    wb = WriteBehindQueue(sink, registry=None, journal=options, flush_interval=60.0)
    accepted = 0
    with pytest.raises(QueueFull, match="journal is full"):
        for i in range(1000):
            wb.put_nowait(row(i, "x" * 100))
            accepted += 1
    assert 20 < accepted < 100
    with pytest.raises(QueueFull):
        wb.put(row("late", 1), timeout=0.1)
    sink.gate.set()
    assert wb.flush(10)
    wb.put(row("late", 1), timeout=10)  # room again: the written segments are released
    assert wb.flush(10)
    assert len(sink.table) == accepted + 1
    wb.close(10)


def test_a_value_the_journal_cannot_hold_is_refused_at_put(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    wb = queue(sink, tmp_path, failures)
    with pytest.raises(TypeError, match="journal"):
        wb.put(row(1, object()))
    with pytest.raises(TypeError, match="journal"):
        wb.put_many([row(2, 2), row(3, object())])
    wb.put(row(4, 4))
    assert wb.flush(10)
    assert sink.table == {4: 4}
    assert wb.metrics().total_enqueued == 1
    wb.close(10)


def test_damaged_records_are_set_aside_and_counted_and_the_rest_replayed(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    sink.gate = threading.Event()
    wb = queue(sink, tmp_path, failures)
    wb.put(row(0, "busy"))
    wb.flush(timeout=0.01)
    assert sink.write_started.wait(10)
    wb.put_many([row(i, f"v{i}") for i in range(1, 11)])
    abandon(wb, sink)
    [directory] = instances(tmp_path)
    [segment] = sorted(directory.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside one record
    segment.write_bytes(bytes(data))

    again = queue(sink, tmp_path, failures)
    again.start()
    assert again.flush(10)
    metrics = again.metrics()
    assert metrics.total_corrupt == 1
    assert metrics.total_replayed == 9
    assert len(sink.table) == 10  # row 0 and the 9 undamaged
    again.close(10)
    assert list((tmp_path / "fake" / ".corrupt").iterdir())  # the damaged bytes are kept


def test_a_torn_record_at_the_end_is_cut_without_a_sound(
    tmp_path: Path, failures: list[Failure]
) -> None:
    orphan = SegmentWriter(tmp_path, "fake")
    from writebehind.journal.keeper import encode_record

    orphan.append([encode_record(0, i, (i, f"v{i}"), {}) for i in range(1, 6)])
    path = orphan.path
    orphan.close()
    [segment] = sorted(path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-3])  # killed in the middle of the last record
    sink = ProgressSink()
    again = queue(sink, tmp_path, failures)
    again.start()
    assert again.flush(10)
    assert sink.table == {i: f"v{i}" for i in range(1, 5)}
    assert again.metrics().total_corrupt == 0
    again.close(10)
    assert instances(tmp_path) == []


def test_journal_arguments_are_checked(tmp_path: Path) -> None:
    sink = ProgressSink()
    with pytest.raises(TypeError, match="journal must be"):
        WriteBehindQueue(sink, registry=None, journal=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sync must be one of"):
        Journal(tmp_path, sync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bytes"):
        Journal(tmp_path, max_bytes=10)
    with pytest.raises(ValueError, match=r"max_bytes must be at least twice .*\(8192\)"):
        Journal(tmp_path, max_bytes=8191)
    with pytest.raises(ValueError, match="max_bytes"):
        Journal(tmp_path, max_bytes=256 * 1024, segment_bytes=4 << 20)  # given, it is kept
    with pytest.raises(TypeError, match="segment_bytes"):
        Journal(tmp_path, segment_bytes=4096.0)  # type: ignore[arg-type]
    # Without segment_bytes, a small journal gets small segments.
    assert Journal(tmp_path, max_bytes=256 * 1024).segment_bytes == 64 * 1024
    assert Journal(tmp_path, max_bytes=8192).segment_bytes == 4096
    assert Journal(tmp_path).segment_bytes == 4 << 20
    assert Journal(tmp_path, max_bytes=1 << 40).segment_bytes == 4 << 20
    with pytest.raises(ValueError, match="name"):
        WriteBehindQueue(sink, registry=None, journal=tmp_path, name="a/b")
    wb = WriteBehindQueue(sink, registry=None, journal=str(tmp_path))
    assert wb.journal == Journal(str(tmp_path))
    wb.close()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        WriteBehindQueue(sink, registry=None, journal=a_file / "journal")
    # Nothing is made before the first put: a directory that cannot be made fails there.
    nowhere = WriteBehindQueue(sink, registry=None, journal="/proc/writebehind-journal")
    with pytest.raises(OSError, match="cannot open its journal under /proc/writebehind-journal"):
        nowhere.put(row(1, 1))
    nowhere.close()


def test_a_forked_child_keeps_a_journal_of_its_own_and_leaves_the_parents_locked(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    wb = queue(sink, tmp_path, failures)
    wb.put(row(1, "parent"))
    assert wb.flush(10)
    [parent_journal] = instances(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, Python 3.12+
        pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            wb.put(row(2, "child"))
            mine = [p for p in instances(tmp_path) if p != parent_journal]
            written = wb.flush(timeout=10) and sink.table.get(2) == "child"
            # The parent's journal is still locked by the parent: nothing to take over.
            untouched = take_over(tmp_path, "fake") == []
            wb.close(timeout=10)
            gone = not any(p.exists() for p in mine)
            code = 0 if len(mine) == 1 and written and untouched and gone else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert take_over(tmp_path, "fake") == []  # the child's exit did not unlock the parent's
    wb.put(row(3, "parent"))
    assert wb.flush(10)
    assert instances(tmp_path) == [parent_journal]
    wb.close(10)
    assert instances(tmp_path) == []


class LostCommitSink(ProgressSink):
    """Its first write commits, then its connection is lost before the reply: the client
    cannot tell whether it was written."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next = True

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        super().write(rows, progress)
        if self.lose_next:
            self.lose_next = False
            raise psycopg.OperationalError("server closed the connection unexpectedly")


def test_a_write_whose_commit_reply_was_lost_is_not_written_again(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = LostCommitSink()
    wb = queue(sink, tmp_path, failures)
    wb.put_many([row(i, i) for i in range(1, 11)])
    assert wb.flush(10)
    assert [key for key, _ in sink.applied] == list(range(1, 11))  # once each
    assert wb.metrics().total_persisted == 10 and wb.metrics().total_retries == 1
    wb.close(10)
    assert instances(tmp_path) == []


class FirstWriteHeld(ProgressSink):
    """Its first write waits for ``release``: a write still running for a process that died."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.lock = threading.Lock()

    def write(self, rows: Sequence[Params], progress: Sequence[ProgressMark] = ()) -> None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.holding.set()
            assert self.release.wait(30)
        super().write(rows, progress)


def test_a_write_left_running_by_a_dead_process_cannot_commit_behind_its_replay(
    tmp_path: Path, failures: list[Failure], caplog: pytest.LogCaptureFixture
) -> None:
    sink = FirstWriteHeld()
    dying = queue(sink, tmp_path, failures)
    dying.put_many([row(i, i) for i in range(1, 6)])
    dying.flush(timeout=0.01)  # due now
    assert sink.holding.wait(10)
    dying._journal._writer._instance.release()  # as its death would: the lock is free

    replaying = queue(sink, tmp_path, failures)
    replaying.start()
    assert replaying.flush(10)
    assert [key for key, _ in sink.applied] == [1, 2, 3, 4, 5]
    sink.release.set()  # the dead process's write reaches its commit: refused, nothing applied
    assert dying.flush(10)
    assert [key for key, _ in sink.applied] == [1, 2, 3, 4, 5]
    assert "written already" in caplog.text
    replaying.close(10)
    dying.close(10)


def test_close_right_after_start_drains_the_replay_before_the_rows_put_since(
    tmp_path: Path, failures: list[Failure]
) -> None:
    sink = ProgressSink()
    sink.gate = threading.Event()
    dying = queue(sink, tmp_path, failures, batch_size=100)
    dying.put(row("busy", 0))
    dying.flush(timeout=0.01)
    assert sink.write_started.wait(10)
    dying.put_many([row(i, "old") for i in range(5000)])
    abandon(dying, sink)

    again = queue(sink, tmp_path, failures, batch_size=100)
    again.start()
    again.put_many([row(i, "new") for i in range(5000)])
    again.close(timeout=30)  # at once: the replay is far from done
    assert {sink.table[i] for i in range(5000)} == {"new"}
    assert again.metrics().total_replayed == 5000
    assert instances(tmp_path) == []


def test_a_full_disk_at_start_lets_the_replay_free_it_before_the_new_journal_is_made(
    tmp_path: Path, failures: list[Failure], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ProgressSink()
    sink.gate = threading.Event()
    dying = queue(sink, tmp_path, failures)
    dying.put(row("busy", 0))
    dying.flush(timeout=0.01)
    assert sink.write_started.wait(10)
    dying.put_many([row(i, "old") for i in range(100)])
    abandon(dying, sink)
    [dead] = instances(tmp_path)

    made = SegmentWriter

    def full_while_the_dead_journal_stays(*args: Any, **kwargs: Any) -> Any:
        if dead.exists():  # the disk is full until the dead journal is replayed and removed
            raise OSError(errno.ENOSPC, "No space left on device")
        return made(*args, **kwargs)

    monkeypatch.setattr(
        "writebehind.journal.keeper.SegmentWriter", full_while_the_dead_journal_stays
    )
    sink.gate = threading.Event()  # the replay is held until the put has met the full disk
    sink.write_started.clear()
    again = queue(sink, tmp_path, failures)
    again.start()
    with pytest.raises(QueueFull, match="journal is full"):
        again.put_nowait(row("new", 1))  # no journal of its own yet: room is waited for
    sink.gate.set()
    assert again.flush(10)  # the replay needs no room
    assert wait_until(lambda: not dead.exists(), timeout=10)  # removed once all is done
    again.put(row("new", 1), timeout=10)  # now it can be made
    assert again.flush(10)
    assert {sink.table[i] for i in range(100)} == {"old"} and sink.table["new"] == 1
    again.close(10)
    assert instances(tmp_path) == []


def test_a_dead_journal_whose_rows_are_all_written_is_removed_without_waiting_for_the_rest(
    tmp_path: Path, failures: list[Failure]
) -> None:
    """Replay removes each dead journal once its rows are written, not after the last one's:
    a process killed during a long replay leaves the next less to read again."""
    sink = ProgressSink()
    written = queue(sink, tmp_path, failures)
    written.put_many([row(i, "a") for i in range(10)])
    assert written.flush(10)
    [done_journal] = instances(tmp_path)

    sink.gate = threading.Event()
    pending = queue(sink, tmp_path, failures)
    pending.put(row("busy", 0))
    pending.flush(timeout=0.01)
    assert sink.write_started.wait(10)
    pending.put_many([row(i, "b") for i in range(10, 210)])
    abandon(pending, sink)
    written._journal._writer._instance.release()  # as its death would; all its rows written
    sink.gate = threading.Event()  # the next writes wait
    sink.write_started.clear()

    again = queue(sink, tmp_path, failures, batch_size=10)
    again.start()
    # The second journal's first rows are being written; the rest of it waits to be queued.
    assert sink.write_started.wait(10)
    assert wait_until(lambda: not done_journal.exists(), timeout=10)
    assert len(instances(tmp_path)) == 1
    sink.gate.set()
    assert again.flush(10)
    again.close(10)
    written.close(10)
    assert instances(tmp_path) == []


def test_with_a_journal_no_retry_budget_gives_rows_up(checked: CheckedSink, tmp_path: Path) -> None:
    failures: list[Failure] = []
    outage = psycopg.OperationalError("the server is gone")
    checked.failures.extend([outage] * 20)
    wb = queue(checked, tmp_path, failures, max_retries=1, max_retry_time=0.0)
    try:
        for key in range(1, 4):
            wb.put(row(key))
        assert wb.flush(timeout=30)
        m = wb.metrics()
    finally:
        wb.close(timeout=10)
    assert failures == []
    assert checked.table == {1: "v", 2: "v", 3: "v"}
    assert (m.total_persisted, m.total_failed, m.total_retries) == (3, 0, 20)


def test_with_a_journal_an_error_the_client_raises_is_handed_over_not_retried(
    checked: CheckedSink, tmp_path: Path
) -> None:
    failures: list[Failure] = []
    bug = ValueError("zip() argument 2 is shorter than argument 1")
    checked.failures.extend([bug] * 5)
    checked.refusable |= {1, 2, 3, 4}  # handed over: a later mark may call them done
    wb = queue(checked, tmp_path, failures, batch_size=4)
    try:
        for key in range(1, 5):
            wb.put(row(key))
        assert wb.flush(timeout=30)
        wb.put(row(5))
        assert wb.flush(timeout=30)
        m = wb.metrics()
    finally:
        wb.close(timeout=10)
    assert [([r["id"] for r in rows], error) for rows, error in failures] == [([1, 2, 3, 4], bug)]
    assert (m.total_failed, m.total_persisted, m.total_retries) == (4, 1, 0)
    assert instances(tmp_path) == []  # handed over is done, as far as the journal goes


def test_with_sync_always_put_and_put_many_return_after_a_sync_of_their_rows(
    checked: CheckedSink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: dict[int, int] = {}  # inode -> bytes of the file an fdatasync covered
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        size = os.fstat(fd).st_size  # what is in the file when the sync starts
        real_fdatasync(fd)
        inode = os.fstat(fd).st_ino
        synced[inode] = max(synced.get(inode, 0), size)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    failures: list[Failure] = []
    checked.gate = threading.Event()  # nothing is written meanwhile: only the journal moves
    wb = WriteBehindQueue(
        checked,
        registry=None,
        flush_interval=60.0,
        on_failure=lambda rows, error: failures.append((rows, error)),
        journal=Journal(tmp_path, sync="always"),
    )

    def unsynced_bytes() -> int:
        (instance,) = instances(tmp_path)
        files = sorted(instance.glob("*.seg"))
        return sum(max(0, p.stat().st_size - synced.get(p.stat().st_ino, 0)) for p in files)

    try:
        for key in range(1, 6):
            wb.put(row(key))
            assert unsynced_bytes() == 0, f"put({key}) returned before its row was synced"
        wb.put_many([row(key) for key in range(6, 16)])
        assert unsynced_bytes() == 0, "put_many() returned before its rows were synced"
    finally:
        checked.gate.set()
        wb.close(timeout=10)
    assert failures == [] and len(checked.table) == 15


def test_segments_that_cannot_be_deleted_leave_the_counters_exact(
    checked: CheckedSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.suffix == ".seg":  # a read-only file system under the journal
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    failures: list[Failure] = []
    wb = WriteBehindQueue(
        checked,
        registry=None,
        batch_size=50,
        flush_interval=60.0,
        on_failure=lambda rows, error: failures.append((rows, error)),
        journal=Journal(tmp_path, segment_bytes=4096, max_bytes=1 << 20),
    )
    with caplog.at_level("WARNING", logger="writebehind"):
        for key in range(1, 1001):
            wb.put(row(key))
        assert wb.flush(timeout=30)
        wb.close(timeout=10)
    m = wb.metrics()
    assert (m.total_enqueued, m.total_persisted, m.total_failed, m.current_queue_depth) == (
        1000,
        1000,
        0,
        0,
    )
    assert failures == [] and len(checked.table) == 1000
    stuck = [r for r in caplog.records if "cannot be deleted" in r.getMessage()]
    assert len(stuck) == 1 and stuck[0].levelname == "ERROR", [r.getMessage() for r in stuck]
    # The journal stays, and so do its progress rows: the next process skips its rows.
    (instance,) = instances(tmp_path)
    assert checked.read_progress(f"fake/{instance.name}/")
    monkeypatch.undo()
    replayer = queue(checked, tmp_path, failures)
    try:
        replayer.start()
        assert replayer.flush(timeout=30)
        assert replayer.metrics().total_replayed == 0
    finally:
        replayer.close(timeout=10)
    assert instances(tmp_path) == []
    assert len(checked.applied) == 1000  # nothing written twice
