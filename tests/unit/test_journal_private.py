"""The journal keeps row data private: owner-only folders and files whatever the umask, no
folder other users may write to or own, no symbolic link followed."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import ProgressSink, row
from writebehind import Journal, WriteBehindQueue
from writebehind.journal.segments import SegmentReader, SegmentWriter, take_over

Failure = tuple[list[Mapping[str, Any]], BaseException]


def queue(sink: ProgressSink, root: Path, **options: Any) -> WriteBehindQueue:
    options.setdefault("registry", None)
    options.setdefault("flush_interval", 60.0)
    return WriteBehindQueue(sink, journal=Journal(root), **options)


def modes(root: Path) -> dict[str, str]:
    """The mode of every folder and file under ``root`` (itself included), by relative path."""
    found = {".": f"{stat.S_IMODE(root.lstat().st_mode):04o}"}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = f"{stat.S_IMODE(path.lstat().st_mode):04o}"
    return found


def not_private(root: Path) -> dict[str, str]:
    """The folders not 0700 and the files not 0600 under ``root``."""
    wrong = {}
    for name, mode in modes(root).items():
        path = root / name
        want = "0700" if path.is_dir() and not path.is_symlink() else "0600"
        if mode != want:
            wrong[name] = mode
    return wrong


def damaged_journal(root: Path) -> Path:
    """A journal of queue "q" under ``root``, 9 records in 3 segments; the first segment's
    header damaged, so that replay repairs it and sets its original aside. Returns it."""
    with SegmentWriter(root, "q", segment_bytes=200) as writer:
        for seq in range(1, 10):
            writer.append([f"{seq}".encode() * 20])
        directory = writer.path
    first = sorted(directory.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[0:8] = b"notmagic"
    first.write_bytes(bytes(data))
    return first


@pytest.fixture(params=[0o022, 0o000], ids=["umask 022", "umask 000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    value: int = request.param
    before = os.umask(value)
    try:
        yield value
    finally:
        os.umask(before)


def test_a_fresh_journal_is_owner_only_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "journal" / "deep"  # the folders made above the queue's are private too
    sink = ProgressSink()
    wb = queue(sink, root, batch_size=2)
    wb.put_many([row(i, i) for i in range(10)])
    assert wb.flush(10)
    files = modes(tmp_path / "journal")
    names = {Path(name).name for name in files}
    assert {"LOCK", "lanes"} <= names and any(name.endswith(".seg") for name in names), files
    assert not_private(tmp_path / "journal") == {}
    wb.close(10)


def test_what_replay_sets_aside_is_owner_only(tmp_path: Path, umask: int) -> None:
    first = damaged_journal(tmp_path)  # repaired at replay, its original set aside
    os.chmod(first, 0o644)  # as an older version left it
    [orphan] = take_over(tmp_path, "q")
    assert len(list(orphan.records())) == 9
    orphan.remove()
    kept = tmp_path / "q" / ".corrupt"
    assert [p.name.endswith(".corrupt") for p in kept.iterdir()] == [True]
    assert not_private(kept) == {}


def test_a_journal_folder_others_may_write_to_is_refused(tmp_path: Path) -> None:
    for mode in (0o777, 0o770, 0o702):
        shared = tmp_path / f"shared-{mode:o}"
        shared.mkdir()
        os.chmod(shared, mode)
        wb = queue(ProgressSink(), shared)
        with pytest.raises(PermissionError, match=f"journal {shared}: other users may write"):
            wb.start()
        with pytest.raises(PermissionError, match="chmod go-w"):
            wb.put(row(1, 1))
        assert list(shared.iterdir()) == []  # nothing was made there
        wb.close()


def test_a_sticky_shared_folder_as_tmp_is_takes_the_queues_private_folder(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    wb = queue(ProgressSink(), shared)
    wb.put(row(1, 1))
    assert wb.flush(10)
    assert not_private(shared / "fake") == {}
    wb.close(10)


def test_a_looser_queue_folder_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "fake"
    folder.mkdir()
    os.chmod(folder, 0o755)  # as an older version made it
    wb = queue(ProgressSink(), tmp_path)
    with caplog.at_level(logging.WARNING, logger="writebehind.journal"):
        wb.start()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert f"journal {folder}: the queue's folder was open to other users (mode 0755)" in (
        caplog.text
    )
    wb.close(10)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 54321, -1)
    with pytest.raises(PermissionError, match=r"belongs to another user \(uid 54321\)"):
        queue(ProgressSink(), theirs).start()
    mine = tmp_path / "mine"
    (mine / "fake").mkdir(parents=True)
    os.chown(mine / "fake", 54321, -1)
    with pytest.raises(PermissionError, match=r"queue's folder belongs to another user"):
        queue(ProgressSink(), mine).start()


def test_a_link_in_place_of_the_queues_folder_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = tmp_path / "journal"
    root.mkdir(mode=0o700)
    (root / "fake").symlink_to(elsewhere)
    with pytest.raises(PermissionError, match="is not a folder"):
        queue(ProgressSink(), root).start()
    assert list(elsewhere.iterdir()) == []


def test_a_link_planted_in_place_of_a_segment_is_not_followed(tmp_path: Path) -> None:
    with SegmentWriter(tmp_path, "q", segment_bytes=200) as writer:
        for seq in range(1, 10):
            writer.append([f"{seq}".encode() * 20])
        directory = writer.path
    segments = sorted(directory.glob("*.seg"))
    assert len(segments) == 3
    # The last segment's bytes, moved out, and a link to them planted in its place.
    outside = tmp_path / "outside.seg"
    outside.write_bytes(segments[-1].read_bytes())
    before = outside.read_bytes()
    segments[-1].unlink()
    segments[-1].symlink_to(outside)
    reader = SegmentReader(directory)
    seqs = [record.seq for record in reader.records()]
    assert seqs and max(seqs) < 9  # the linked segment's records were not read
    assert reader.stats.corrupt_regions == 1
    assert outside.read_bytes() == before  # neither read into the journal nor changed
    assert not segments[-1].exists() and (directory / (segments[-1].name + ".corrupt")).is_symlink()


def test_a_link_planted_where_the_next_segment_goes_is_not_written_through(
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"theirs")
    writer = SegmentWriter(tmp_path, "q", segment_bytes=200)
    writer.append([b"1" * 20])
    (writer.path / "0000000002.seg").symlink_to(target)
    with pytest.raises(OSError):
        for seq in range(2, 20):
            writer.append([f"{seq}".encode() * 20])
    assert target.read_bytes() == b"theirs"
    writer.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_sticky_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    """Sticky protects entries from other users, not from the folder's owner."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chmod(theirs, 0o1777)
    os.chown(theirs, 54321, -1)
    refused = rf"journal {theirs}: (other users may write|this folder belongs to another user)"
    with pytest.raises(PermissionError, match=refused):
        queue(ProgressSink(), theirs).start()
    assert list(theirs.iterdir()) == []


def test_a_folder_made_by_someone_else_after_start_is_refused_at_the_first_put(
    tmp_path: Path,
) -> None:
    root = tmp_path / "journal"
    wb = queue(ProgressSink(), root)
    wb.start()  # nothing to check yet: the journal's folders are made by the first put
    root.mkdir()
    os.chmod(root, 0o777)  # made meanwhile, open to everyone
    with pytest.raises(PermissionError, match=f"journal {root}: other users may write"):
        wb.put(row(1, 1))
    assert list(root.iterdir()) == []
    wb.close(10)


def test_a_link_in_place_of_the_corrupt_folder_is_not_followed(tmp_path: Path) -> None:
    damaged_journal(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    (tmp_path / "q" / ".corrupt").symlink_to(elsewhere)
    [orphan] = take_over(tmp_path, "q")
    assert len(list(orphan.records())) == 9
    orphan.remove()
    assert list(elsewhere.iterdir()) == []
    [kept] = [p for p in (tmp_path / "q").iterdir() if p.name.startswith(".corrupt-")]
    assert not_private(kept) == {}


def test_a_looser_corrupt_folder_is_tightened(tmp_path: Path) -> None:
    damaged_journal(tmp_path)
    kept = tmp_path / "q" / ".corrupt"
    kept.mkdir()
    os.chmod(kept, 0o755)
    [orphan] = take_over(tmp_path, "q")
    list(orphan.records())
    orphan.remove()
    assert not_private(kept) == {}


def test_a_link_in_place_of_an_instance_folder_is_not_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SegmentWriter(tmp_path / "elsewhere", "q", segment_bytes=200) as writer:
        writer.append([b"theirs" * 5])
        planted = writer.path
    (tmp_path / "q").mkdir(mode=0o700)
    link = tmp_path / "q" / "0000000000000001-host-1-deadbeef"
    link.symlink_to(planted)
    with caplog.at_level(logging.ERROR, logger="writebehind.journal"):
        assert take_over(tmp_path, "q") == []
    assert f"journal {link} is a symbolic link" in caplog.text
    assert any(planted.glob("*.seg"))  # neither read nor removed through the link
