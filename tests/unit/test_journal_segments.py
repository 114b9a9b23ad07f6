"""The journal's segment files: framing, rotation, repair of torn and corrupt segments,
bounds, instance locks and a SIGKILL in the middle of appends."""

from __future__ import annotations

import errno
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from writebehind.journal.segments import (
    HEADER_SIZE,
    RECORD_OVERHEAD,
    JournalClosed,
    JournalFull,
    JournalSyncError,
    JournalVersionError,
    ReadStats,
    Record,
    SegmentReader,
    SegmentWriter,
    encode_header,
    take_over,
)


def payload(seq: int, size: int = 40) -> bytes:
    """A payload that says which record it belongs to, so a garbled one is recognised."""
    return (f"{seq}:".encode() * size)[:size]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[SegmentWriter]:
    j = SegmentWriter(tmp_path, "q", segment_bytes=4096, max_bytes=1 << 20)
    yield j
    j.close()


def read_all(directory: Path, after: int = 0) -> tuple[list[Record], ReadStats]:
    reader = SegmentReader(directory)
    records = list(reader.records(after))
    return records, reader.stats


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_round_trip(journal: SegmentWriter) -> None:
    seqs = journal.append([b"a", b"", b"c" * 1000])
    seqs2 = journal.append([b"d"])
    assert list(seqs) == [1, 2, 3] and list(seqs2) == [4]
    journal.close()
    records, stats = read_all(journal.path)
    assert records == [Record(1, b"a"), Record(2, b""), Record(3, b"c" * 1000), Record(4, b"d")]
    assert stats == ReadStats(records=4)


def test_reading_after_a_sequence_number(journal: SegmentWriter) -> None:
    journal.append([payload(s) for s in range(1, 11)])
    journal.close()
    records, stats = read_all(journal.path, after=7)
    assert [r.seq for r in records] == [8, 9, 10]
    assert stats.lost_sequences == 0


def test_segments_rotate_at_segment_bytes(journal: SegmentWriter) -> None:
    for seq in range(1, 201):
        assert list(journal.append([payload(seq)])) == [seq]
    journal.close()
    files = segment_files(journal.path)
    assert len(files) == 3  # 200 records of 56 bytes in segments of 4096
    for path in files:
        assert path.stat().st_size <= 4096
    records, stats = read_all(journal.path)
    assert records == [Record(s, payload(s)) for s in range(1, 201)]
    assert stats.corrupt_regions == 0


def test_a_group_is_never_split_across_segments(journal: SegmentWriter) -> None:
    journal.append([payload(1, 3000)])
    journal.append([payload(2, 600), payload(3, 600)])  # does not fit after the first
    journal.close()
    first, second = segment_files(journal.path)
    assert first.stat().st_size == HEADER_SIZE + RECORD_OVERHEAD + 3000
    assert second.stat().st_size == HEADER_SIZE + 2 * (RECORD_OVERHEAD + 600)


def written(tmp_path: Path, count: int, size: int = 40) -> Path:
    with SegmentWriter(tmp_path, "q", segment_bytes=1 << 20) as j:
        for seq in range(1, count + 1):
            j.append([payload(seq, size)])
        return j.path


def test_a_torn_tail_is_cut_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    directory = written(tmp_path, 3)
    (path,) = segment_files(directory)
    whole = path.read_bytes()
    last_start = len(whole) - (RECORD_OVERHEAD + 40)
    for cut in range(last_start + 1, len(whole)):
        path.write_bytes(whole[:cut])
        records, stats = read_all(directory)
        assert records == [Record(1, payload(1)), Record(2, payload(2))], cut
        assert stats.corrupt_regions == 0 and stats.lost_sequences == 0, cut
        assert stats.truncated_bytes == cut - last_start, cut
        assert path.stat().st_size == last_start, cut
        assert not list(directory.glob("*.corrupt"))


def test_a_torn_header_of_a_new_last_segment_is_removed(tmp_path: Path) -> None:
    directory = written(tmp_path, 2)
    torn = directory / "0000000002.seg"
    torn.write_bytes(encode_header(3)[:10])
    records, stats = read_all(directory)
    assert [r.seq for r in records] == [1, 2]
    assert stats.corrupt_regions == 0 and not torn.exists()


@pytest.mark.parametrize("size", [0, 1, HEADER_SIZE - 1])
def test_a_new_segment_left_without_its_header_after_many_is_a_torn_tail(
    tmp_path: Path, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Killed between creating the file and writing its header, after several rotations: the
    # file holds no sequence number to be sorted by, so it is not read last.
    with SegmentWriter(tmp_path, "q", segment_bytes=HEADER_SIZE + 3 * (RECORD_OVERHEAD + 40)) as j:
        for seq in range(1, 31):
            j.append([payload(seq)])
        directory = j.path
    files = segment_files(directory)
    number = int(files[-1].stem) + 1
    torn = directory / f"{number:010d}.seg"
    torn.write_bytes(encode_header(31)[:size])
    with caplog.at_level("WARNING", logger="writebehind.journal"):
        records, stats = read_all(directory)
    assert [r.seq for r in records] == list(range(1, 31))
    assert (stats.corrupt_regions, stats.lost_sequences) == (0, 0)
    assert not torn.exists()
    assert not list(directory.glob("*.corrupt"))
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_an_empty_segment_anywhere_lost_nothing(tmp_path: Path) -> None:
    directory = several_segments(tmp_path)
    empty = directory / "0000000003.seg"
    empty.write_bytes(b"")  # its records were never written: a gap says so if there were any
    records, stats = read_all(directory)
    assert stats.corrupt_regions == 0 and not empty.exists()
    assert stats.lost_sequences == 3  # the three records that segment held


@pytest.mark.parametrize("where", ["length", "crc", "seq", "payload"])
def test_a_flipped_byte_in_the_middle_sets_the_record_aside(tmp_path: Path, where: str) -> None:
    directory = written(tmp_path, 5)
    (path,) = segment_files(directory)
    data = bytearray(path.read_bytes())
    third = HEADER_SIZE + 2 * (RECORD_OVERHEAD + 40)
    offset = third + {"length": 1, "crc": 5, "seq": 8, "payload": 30}[where]
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))

    records, stats = read_all(directory)
    assert [r.seq for r in records] == [1, 2, 4, 5]
    assert all(r.payload == payload(r.seq) for r in records)
    assert stats.corrupt_regions == 1
    assert stats.corrupt_bytes == RECORD_OVERHEAD + 40
    assert stats.lost_sequences == 1
    # The damaged bytes are kept aside; the segment now reads clean.
    assert (directory / (path.name + ".corrupt")).read_bytes() == bytes(data)
    records, stats = read_all(directory)
    assert [r.seq for r in records] == [1, 2, 4, 5]
    assert stats.corrupt_regions == 0 and stats.lost_sequences == 1


def test_garbage_at_the_end_of_a_segment_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    directory = written(tmp_path, 2)
    (path,) = segment_files(directory)
    with open(path, "ab") as f:
        f.write(struct.pack("<IIQ", 3, 12345, 3) + b"xyz")  # complete, wrong CRC
    records, stats = read_all(directory)
    assert [r.seq for r in records] == [1, 2]
    assert stats.corrupt_regions == 1 and stats.truncated_bytes == 0


def test_a_bad_header_sets_the_segment_aside_and_reading_goes_on(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", segment_bytes=200) as j:
        for seq in range(1, 10):
            j.append([payload(seq)])
        directory = j.path
    files = segment_files(directory)
    assert len(files) == 3
    data = bytearray(files[0].read_bytes())
    data[0:8] = b"notmagic"
    files[0].write_bytes(bytes(data))

    records, stats = read_all(directory)
    # The records of a segment with a bad header are recognised by their own CRC.
    assert [r.seq for r in records] == list(range(1, 10))
    assert stats.corrupt_regions == 1 and stats.corrupt_bytes == HEADER_SIZE
    assert (directory / (files[0].name + ".corrupt")).exists()


def test_a_segment_of_garbage_is_set_aside_and_counted_as_lost(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", segment_bytes=200) as j:
        for seq in range(1, 10):
            j.append([payload(seq)])
        directory = j.path
    files = segment_files(directory)
    size = files[1].stat().st_size
    files[1].write_bytes(os.urandom(size))
    records, stats = read_all(directory)
    lost = 9 - len(records)
    assert lost > 0 and stats.lost_sequences == lost
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert all(r.payload == payload(r.seq) for r in records)
    assert stats.corrupt_bytes == size


def test_a_newer_format_version_raises_and_sets_nothing_aside(tmp_path: Path) -> None:
    directory = written(tmp_path, 1)
    (path,) = segment_files(directory)
    import zlib

    body = struct.pack("<8sHHQ", b"wbjournl", 3, 0, 1)
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)) + path.read_bytes()[HEADER_SIZE:])
    with pytest.raises(JournalVersionError, match="version 3"):
        read_all(directory)
    assert not list(directory.glob("*.corrupt"))


def test_a_version_1_segment_is_still_read(tmp_path: Path) -> None:
    directory = written(tmp_path, 3)
    (path,) = segment_files(directory)
    import zlib

    body = struct.pack("<8sHHQ", b"wbjournl", 1, 0, 1)  # as 0.2 wrote them
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)) + path.read_bytes()[HEADER_SIZE:])
    records, stats = read_all(directory)
    assert [r.seq for r in records] == [1, 2, 3] and stats.corrupt_regions == 0


def test_meta_records_precede_the_records_after_them_in_every_segment(tmp_path: Path) -> None:
    segment = HEADER_SIZE + 4 * (RECORD_OVERHEAD + 40)
    with SegmentWriter(tmp_path, "q", segment_bytes=segment, max_bytes=1 << 20) as j:
        j.append([payload(1)])
        j.describe(b"meta-a")
        j.describe(b"meta-a")  # the same again: nothing more
        for seq in range(2, 12):
            j.append([payload(seq)])
        j.describe(b"meta-b")
        j.append_one_nowait(payload(12))
        j.append_one_nowait(payload(13))
        directory = j.path
    records, stats = read_all(directory)
    assert [r.seq for r in records if r.seq] == list(range(1, 14))
    assert stats.corrupt_regions == stats.lost_sequences == 0
    # Read segment by segment, each record is preceded in its own segment by the metas
    # described before it.
    for path in segment_files(directory):
        seen: list[bytes] = []
        data = path.read_bytes()
        offset = HEADER_SIZE
        while offset < len(data):
            length, _crc, seq = struct.unpack_from("<IIQ", data, offset)
            body = data[offset + RECORD_OVERHEAD : offset + RECORD_OVERHEAD + length]
            if seq == 0:
                seen.append(body)
            elif seq >= 2:
                assert b"meta-a" in seen, (path.name, seq)
            if seq >= 13:
                assert b"meta-b" in seen, (path.name, seq)
            offset += RECORD_OVERHEAD + length
    metas = [r.payload for r in records if r.seq == 0]
    assert metas[:2] == [b"meta-a", b"meta-a"] and b"meta-b" in metas
    # A meta record damaged is set aside like any other record.
    last = segment_files(directory)[-1]
    damaged = bytearray(last.read_bytes())
    damaged[HEADER_SIZE + RECORD_OVERHEAD] ^= 0x01  # the first meta record's payload
    last.write_bytes(bytes(damaged))
    records, stats = read_all(directory)
    assert stats.corrupt_regions == 1 and stats.lost_sequences == 0
    assert [r.seq for r in records if r.seq] == list(range(1, 14))


def test_release_upto_deletes_only_whole_segments_at_or_below(journal: SegmentWriter) -> None:
    for seq in range(1, 101):
        journal.append([payload(seq)])
    before = segment_files(journal.path)
    # The first segment ends just before the second one's first sequence number (its header).
    boundary = struct.unpack_from("<Q", before[1].read_bytes(), 12)[0] - 1
    assert journal.release_upto(boundary - 1) == 0
    assert segment_files(journal.path) == before
    size = before[0].stat().st_size
    assert journal.release_upto(boundary) == size
    assert journal.disk_bytes == sum(p.stat().st_size for p in before[1:])
    assert segment_files(journal.path) == before[1:]
    journal.release_upto(10**9)
    assert segment_files(journal.path) == before[-1:]  # the segment being written stays
    records, stats = read_all(journal.path, after=boundary)
    assert records[-1].seq == 100 and stats.lost_sequences == 0


def test_max_bytes_makes_append_wait_then_raise(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", segment_bytes=1024, max_bytes=4096) as j:
        seq = 0
        with pytest.raises(JournalFull, match="max_bytes"):
            while True:
                seq = j.append([payload(seq + 1, 200)], timeout=0)[-1]
        on_disk = sum(p.stat().st_size for p in segment_files(j.path))
        assert j.disk_bytes == on_disk and on_disk <= 4096
        # A blocked append goes on once release_upto() frees a segment.
        done = threading.Event()
        result: list[range] = []

        def blocked() -> None:
            result.append(j.append([payload(seq + 1, 200)], timeout=30))
            done.set()

        t = threading.Thread(target=blocked)
        t.start()
        assert not done.wait(0.05)
        j.release_upto(seq)
        assert done.wait(30)
        t.join()
        assert list(result[0]) == [seq + 1]
        with pytest.raises(ValueError, match="payloads"):
            j.append([b"x" * 5000])


def test_enospc_is_backpressure_and_leaves_no_partial_record(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", segment_bytes=1 << 20) as j:
        j.append([payload(1)])
        real = j._write
        full = True

        def write(fd: int, data: bytes) -> int:
            if full:
                real(fd, data[:7])  # a short write, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        j._write = write
        with pytest.raises(JournalFull, match="disk full"):
            j.append([payload(2)], timeout=0.01)
        full = False
        assert list(j.append([payload(2)], timeout=0)) == [2]
        path = j.path
    records, stats = read_all(path)
    assert records == [Record(1, payload(1)), Record(2, payload(2))]
    assert stats == ReadStats(records=2)


def test_append_one_rotates_fills_and_meets_a_full_disk_as_append_does(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", segment_bytes=4096, max_bytes=3 * 4096) as j:
        seqs: list[int] = []
        while (seq := j.append_one_nowait(payload(len(seqs) + 1, 200))) is not None:
            seqs.append(seq)
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(segment_files(j.path)) >= 3  # rotated, then full by max_bytes
        assert j.disk_bytes <= 3 * 4096
        j.release_upto(seqs[-1])
        real = j._write
        full = True

        def write(fd: int, data: bytes) -> int:
            if full:
                real(fd, data[:7])  # a short write, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)

        j._write = write
        assert j.append_one_nowait(payload(len(seqs) + 1)) is None
        full = False
        seqs.append(j.append_one_nowait(payload(len(seqs) + 1)) or 0)
        path = j.path
    records, stats = read_all(path)
    assert [r.seq for r in records][-1] == seqs[-1] == len(seqs)
    assert records[-1].payload == payload(len(seqs))
    assert stats.corrupt_regions == 0 and stats.truncated_bytes == 0


@pytest.mark.parametrize("sync", ["process", "interval", "always"])
def test_each_sync_mode_round_trips_from_several_threads(tmp_path: Path, sync: str) -> None:
    j = SegmentWriter(tmp_path, "q", sync=sync, sync_interval=0.01, segment_bytes=8192)  # type: ignore[arg-type]
    got: list[int] = []
    lock = threading.Lock()

    def producer() -> None:
        for _ in range(50):
            seqs = j.append([b"x" * 30, b"y" * 30])
            with lock:
                got.extend(seqs)

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close()
    assert sorted(got) == list(range(1, 401))
    records, stats = read_all(j.path)
    assert [r.seq for r in records] == list(range(1, 401))
    assert stats.corrupt_regions == 0
    with pytest.raises(JournalClosed):
        j.append([b"z"])


def test_always_syncs_before_append_returns(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", sync="always") as j:
        synced: list[int] = []
        real = j._fdatasync

        def fdatasync(fd: int) -> None:
            real(fd)
            synced.append(j._written_seq)

        j._fdatasync = fdatasync
        for seq in range(1, 6):
            j.append([payload(seq)])
            assert synced and synced[-1] >= seq


def test_interval_syncs_in_the_background_no_sooner_than_the_interval(tmp_path: Path) -> None:
    now = [100.0]
    j = SegmentWriter(tmp_path, "q", sync="interval", sync_interval=0.01, clock=lambda: now[0])
    synced = threading.Event()
    real = j._fdatasync

    def fdatasync(fd: int) -> None:
        real(fd)
        synced.set()

    j._fdatasync = fdatasync
    try:
        j.append([payload(1)])
        # The clock has not moved: in real time the interval passed many times, yet no sync.
        assert not synced.wait(0.1)
        now[0] += 0.01
        assert synced.wait(10)
        assert j._synced_seq == 1
    finally:
        j.close()


def test_close_waits_for_a_sync_under_way_before_closing_its_descriptor(tmp_path: Path) -> None:
    j = SegmentWriter(tmp_path, "q")
    j.append([payload(1)])
    entered, gate = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def fdatasync(fd: int) -> None:
        entered.set()
        gate.wait(10)
        os.fstat(fd)  # EBADF had close() taken the descriptor away

    def sync() -> None:
        try:
            j.sync()
        except BaseException as exc:
            errors.append(exc)

    j._fdatasync = fdatasync
    syncer = threading.Thread(target=sync)
    syncer.start()
    assert entered.wait(10)
    closer = threading.Thread(target=j.close)
    closer.start()
    closer.join(0.1)
    assert closer.is_alive()
    gate.set()
    syncer.join(10)
    closer.join(10)
    assert errors == [] and not closer.is_alive()


def test_a_failed_fdatasync_is_not_trusted_the_records_are_written_again(
    tmp_path: Path,
) -> None:
    with SegmentWriter(tmp_path, "q", sync="always") as j:
        j.append([payload(1)])
        real = j._fdatasync
        failures = [OSError(errno.EIO, "Input/output error")]
        synced_fds: list[int] = []

        def fdatasync(fd: int) -> None:
            if failures:
                raise failures.pop()
            synced_fds.append(fd)
            real(fd)

        j._fdatasync = fdatasync
        assert list(j.append([payload(2), payload(3)])) == [2, 3]
        # Not the same descriptor synced again: a new segment holding records 2 and 3.
        assert len(segment_files(j.path)) == 2
        assert synced_fds == [j._fd]
        assert list(j.append([payload(4)])) == [4]
        path = j.path
    records, stats = read_all(path)
    assert records == [Record(s, payload(s)) for s in range(1, 5)]
    assert stats.corrupt_regions == 0 and stats.lost_sequences == 0


def test_a_second_failure_raises_and_the_journal_refuses_appends(tmp_path: Path) -> None:
    j = SegmentWriter(tmp_path, "q", sync="always")
    j.append([payload(1)])

    def fdatasync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    j._fdatasync = fdatasync
    with pytest.raises(JournalSyncError, match="may not be durable"):
        j.append([payload(2)])
    with pytest.raises(JournalSyncError):
        j.append([payload(3)])
    j.close()


def test_new_instances_are_locked_and_dead_ones_taken_over(tmp_path: Path) -> None:
    live = SegmentWriter(tmp_path, "q")
    live.append([b"live"])
    assert take_over(tmp_path, "q") == []  # held by this process's own journal
    live.close()
    (orphan,) = take_over(tmp_path, "q")
    assert orphan.path == live.path
    assert take_over(tmp_path, "q") == []  # now held by the orphan
    assert [r.payload for r in orphan.records()] == [b"live"]
    orphan.remove()
    assert not live.path.exists()
    assert take_over(tmp_path, "q") == []


def test_remove_keeps_what_was_set_aside(tmp_path: Path) -> None:
    directory = written(tmp_path, 3)
    (path,) = segment_files(directory)
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 20] ^= 1
    path.write_bytes(bytes(data))
    (orphan,) = take_over(tmp_path, "q")
    assert [r.seq for r in orphan.records()] == [2, 3]
    orphan.remove()
    assert not directory.exists()
    kept = tmp_path / "q" / ".corrupt" / f"{directory.name}.{path.name}.corrupt"
    assert kept.read_bytes() == bytes(data)


def test_a_forked_child_does_not_keep_the_parents_instance_locked(tmp_path: Path) -> None:
    j = SegmentWriter(tmp_path, "q")
    j.append([b"parent"])
    release_child, child_ready = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: forget the parent's journal, then wait to be told to exit
        try:
            j.forget_after_fork()
            os.write(child_ready[1], b"x")
            os.read(release_child[0], 1)
        finally:
            os._exit(0)
    try:
        assert os.read(child_ready[0], 1) == b"x"
        j.close()  # the parent is done with it while the child still lives
        (orphan,) = take_over(tmp_path, "q")
        assert [r.payload for r in orphan.records()] == [b"parent"]
        orphan.release()
    finally:
        os.write(release_child[1], b"x")
        os.waitpid(pid, 0)
        for fd in (*release_child, *child_ready):
            os.close(fd)
    with pytest.raises(ValueError, match="queue"):
        SegmentWriter(tmp_path, "../x")


CHILD = textwrap.dedent(
    """
    import os, struct, sys
    from writebehind.journal.segments import SegmentWriter
    root, mode = sys.argv[1], sys.argv[2]
    j = SegmentWriter(root, "q", segment_bytes=64 * 1024)
    os.write(1, b"R")
    if mode == "hold":
        sys.stdin.read()
        os._exit(0)
    seq = 0
    while True:
        group = [(f"{s}:".encode() * 40)[:40] for s in range(seq + 1, seq + 1 + (seq % 7) + 1)]
        seq = j.append(group)[-1]
        os.write(1, struct.pack("<Q", seq))
    """
)


def spawn(root: Path, mode: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdout.read(1) == b"R"
    return child


def test_sigkill_while_appending_loses_no_returned_record(tmp_path: Path) -> None:
    rng = random.Random(10)
    for _ in range(10):
        child = spawn(tmp_path, "append")
        assert child.stdout is not None
        reported = 0
        kill_after = rng.randrange(1, 20_000)
        while reported < kill_after:
            reported = struct.unpack("<Q", child.stdout.read(8))[0]
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        if len(rest) >= 8:
            reported = struct.unpack_from("<Q", rest, len(rest) - len(rest) % 8 - 8)[0]
        child.stdout.close()
        assert child.stdin is not None
        child.stdin.close()

        (orphan,) = take_over(tmp_path, "q")
        records = list(orphan.records())
        assert orphan.reader.stats.corrupt_regions == 0
        seqs = [r.seq for r in records]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= reported
        assert all(r.payload == payload(r.seq) for r in records)
        orphan.remove()


def test_a_lock_is_free_once_its_process_dies_and_taken_by_one_process(tmp_path: Path) -> None:
    child = spawn(tmp_path, "hold")
    assert take_over(tmp_path, "q") == []
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.stdout.close()
    (orphan,) = take_over(tmp_path, "q")
    # Another process looking now finds nothing to take.
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from writebehind.journal.segments import take_over; "
            "print(len(take_over(sys.argv[1], 'q')))",
            str(tmp_path),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    assert other.stdout.strip() == "0"
    orphan.release()
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from writebehind.journal.segments import take_over; "
            "print(len(take_over(sys.argv[1], 'q')))",
            str(tmp_path),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    assert other.stdout.strip() == "1"


def several_segments(tmp_path: Path, count: int = 30) -> Path:
    with SegmentWriter(tmp_path, "q", segment_bytes=HEADER_SIZE + 3 * (RECORD_OVERHEAD + 40)) as j:
        for seq in range(1, count + 1):
            j.append([payload(seq)])
        return j.path


def test_segments_renamed_out_of_order_are_read_in_sequence_order(tmp_path: Path) -> None:
    directory = several_segments(tmp_path)
    first, second = segment_files(directory)[:2]
    first.rename(directory / "swap")
    second.rename(first)
    (directory / "swap").rename(second)  # segments 1 and 2 swapped
    (segment_files(directory)[4]).rename(directory / "0000000077.seg")  # and one renamed
    records, stats = read_all(directory)
    assert [r.seq for r in records] == list(range(1, 31))
    assert stats == ReadStats(records=30)


def test_a_segment_that_cannot_be_read_is_set_aside_and_counted(tmp_path: Path) -> None:
    directory = several_segments(tmp_path)
    second = segment_files(directory)[1]
    second.unlink()
    second.mkdir()  # a directory where a segment was
    records, stats = read_all(directory)
    assert [r.seq for r in records] == [1, 2, 3, *range(7, 31)]
    assert stats.corrupt_regions == 1 and stats.lost_sequences == 3
    assert (directory / (second.name + ".corrupt")).is_dir()


def test_an_instance_whose_lock_cannot_be_used_is_left_alone_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    odd = several_segments(tmp_path / "a")
    (odd / "LOCK").unlink()
    (odd / "LOCK").mkdir()  # a directory where the lock file was
    lockless = several_segments(tmp_path / "b")
    (lockless / "LOCK").unlink()  # its process may live on, locking the deleted file
    assert take_over(tmp_path / "a", "q") == [] and take_over(tmp_path / "b", "q") == []
    assert "its lock cannot be opened" in caplog.text
    assert "has segments but no LOCK file: not replayed" in caplog.text
    (lockless / "LOCK").write_text("")  # as the message says: then it is replayed
    (orphan,) = take_over(tmp_path / "b", "q")
    assert len(list(orphan.records())) == 30
    orphan.remove()


def test_remove_takes_odd_files_along_and_keeps_set_aside_bytes_under_another_name(
    tmp_path: Path,
) -> None:
    directory = several_segments(tmp_path)
    (directory / "lanes").mkdir()  # a directory where a file should be
    (directory / "0000000001.seg.corrupt").write_bytes(b"kept")
    (tmp_path / "q" / ".corrupt").write_text("a file took the name")
    (orphan,) = take_over(tmp_path, "q")
    orphan.remove()
    assert not directory.exists()
    [kept] = [p for p in (tmp_path / "q").iterdir() if p.name.startswith(".corrupt-")]
    assert [p.read_bytes() for p in kept.iterdir()] == [b"kept"]
