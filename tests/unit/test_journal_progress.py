"""The progress tracker: the marks a write records, what replay skips, what may be released."""

from __future__ import annotations

import threading

from writebehind._sink import ProgressMark
from writebehind.journal.progress import Done, ProgressTracker

S = "q/i/0"


def accept(tracker: ProgressTracker, *seqs: int, source: str = S) -> None:
    tracker.accepted_all([Done(source, seq) for seq in seqs])


def plain(marks: list[ProgressMark]) -> list[tuple[str, int, tuple[int, ...]]]:
    return [(m.source, m.applied_seq, m.applied_extra) for m in marks]


def done(*seqs: int, source: str = S) -> list[Done]:
    return [Done(source, seq) for seq in seqs]


def test_in_order_writes_record_the_last_row_written() -> None:
    tracker = ProgressTracker()
    accept(tracker, *range(1, 11))
    assert plain(tracker.marks(done(1, 2, 3, 4, 5))) == [(S, 5, ())]
    tracker.settle(done(1, 2, 3, 4, 5))
    assert plain(tracker.marks(done(6, 7, 8, 9, 10))) == [(S, 10, ())]
    tracker.settle(done(6, 7, 8, 9, 10))
    assert tracker.applied(S) == 10
    assert tracker.pending() == 0


def test_a_part_committed_ahead_of_earlier_rows_is_recorded_as_extra() -> None:
    # A batch split to isolate a refused row commits its parts separately, in key order.
    tracker = ProgressTracker()
    accept(tracker, *range(1, 9))
    assert plain(tracker.marks(done(6, 7))) == [(S, 0, (6, 7))]
    tracker.settle(done(6, 7))
    assert plain(tracker.marks(done(1, 2, 3))) == [(S, 3, (6, 7))]
    tracker.settle(done(1, 2, 3))
    tracker.settle(done(4))  # refused, handed to on_failure: done without a write
    assert plain(tracker.marks(done(5, 8))) == [(S, 8, ())]


def test_a_row_combined_into_an_older_one_does_not_cover_the_rows_between() -> None:
    # coalesce: record 9 was combined into the waiting row of record 5; 7 waits behind it.
    tracker = ProgressTracker()
    accept(tracker, 5, 7, 9)
    assert plain(tracker.marks(done(5, 9))) == [(S, 6, (9,))]
    tracker.settle(done(5, 9))
    assert plain(tracker.marks(done(7))) == [(S, 9, ())]


def test_seeded_progress_says_what_replay_skips_and_is_kept_in_later_marks() -> None:
    tracker = ProgressTracker()
    tracker.seed(S, 10, {15})
    assert tracker.is_done(S, 9) and tracker.is_done(S, 10) and tracker.is_done(S, 15)
    assert not tracker.is_done(S, 11) and not tracker.is_done(S, 16)
    assert not tracker.is_done("q/i/1", 1)
    accept(tracker, 11, 12, 13, 14, 16)
    assert plain(tracker.marks(done(11))) == [(S, 11, (15,))]
    tracker.settle(done(11))
    assert plain(tracker.marks(done(12, 13, 14))) == [(S, 15, ())]


def test_marks_come_one_per_source() -> None:
    tracker = ProgressTracker()
    accept(tracker, 1, 3, source="a")
    accept(tracker, 2, 4, source="b")
    marks = plain(tracker.marks([Done("a", 1), Done("b", 2), Done("b", 4)]))
    # Sequence numbers are per journal: a source's mark may pass numbers of other sources.
    assert sorted(marks) == [("a", 2, ()), ("b", 4, ())]


def test_floor_is_what_every_source_has_done() -> None:
    tracker = ProgressTracker()
    accept(tracker, 1, 3, 5, source="a")
    accept(tracker, 2, 4, 6, source="b")
    assert tracker.floor(["a", "b"], last=6) == 0
    tracker.settle(done(1, 3, source="a"))
    assert tracker.floor(["a", "b"], last=6) == 1
    tracker.settle(done(2, 4, 6, source="b"))
    assert tracker.floor(["a", "b"], last=6) == 4
    tracker.settle(done(5, source="a"))
    assert tracker.floor(["a", "b"], last=6) == 6


def test_wait_done_returns_once_every_record_of_a_prefix_is_done() -> None:
    tracker = ProgressTracker()
    accept(tracker, 1, 2, source="old/x/0")
    accept(tracker, 3, source="new/y/0")
    assert not tracker.wait_done("old/", 0.01)
    settled = threading.Thread(target=tracker.settle, args=(done(1, 2, source="old/x/0"),))
    settled.start()
    assert tracker.wait_done("old/", 10)
    settled.join()
    assert tracker.pending("new/") == 1
    tracker.forget("old/")
    assert tracker.pending() == 1


def test_marks_expect_what_was_written_last_and_name_their_owner() -> None:
    tracker = ProgressTracker(owner="q/me/")
    accept(tracker, 1, 2, 3)
    [first] = tracker.marks(done(1))
    assert first.expected is None and first.owner == "q/me/"  # no row yet
    tracker.wrote([first])
    tracker.settle(done(1))
    [second] = tracker.marks(done(2))
    assert second.expected == (1, ())
    tracker.found(S, (3, frozenset()))  # read after a conflict: another write got there
    [third] = tracker.marks(done(3))
    assert third.expected == (3, ())
    tracker.seed("q/dead/0", 7, {9})
    assert tracker.marks([Done("q/dead/0", 8)])[0].expected == (7, (9,))
