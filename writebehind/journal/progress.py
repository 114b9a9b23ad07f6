"""Which journal records are done: what a write records in the progress table, what replay skips.

A journal's records are split into sources, one per lane of the queue that took them (its writer
writes them in order). A record is *done* once it is committed, or handed to ``on_failure``. The
progress of a source is ``(applied_seq, applied_extra)``: every record with a sequence number up to
``applied_seq`` is done, and so are those in ``applied_extra`` above it. The extras are needed
because records are not always done in sequence order: a batch split to isolate a refused row
commits its parts separately, in key order, and a row combined into a waiting row of its key
(``coalesce``) is written with that row, ahead of rows put before it.

The mark a write records covers the records it commits as if already done, so that it is exact
once the transaction commits, and harmless if it does not (the transaction carries it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple

from .._sink import ProgressMark

__all__ = ["Done", "ProgressTracker", "covers"]


class Done(NamedTuple):
    """One record: the source it belongs to and its sequence number there."""

    source: str
    seq: int


def covers(progress: tuple[int, Collection[int]] | None, seq: int) -> bool:
    """Whether a source's progress ``(applied_seq, applied_extra)`` (None: none recorded) says
    its record ``seq`` is done."""
    return progress is not None and (seq <= progress[0] or seq in progress[1])


class _Source:
    __slots__ = ("high", "outstanding", "settled")

    def __init__(self, applied_seq: int = 0, extras: Iterable[int] = ()) -> None:
        self.outstanding: deque[int] = deque()  # accepted, in sequence order; some may be done
        self.settled: set[int] = set(extras)  # done, above the applied mark
        self.high = applied_seq  # the highest sequence number seen (accepted or applied)

    def applied(self, done: set[int]) -> tuple[int, tuple[int, ...]]:
        """The mark with ``done`` counted as done too."""
        settled = self.settled
        applied = self.high
        for seq in self.outstanding:
            if seq not in settled and seq not in done:
                applied = seq - 1
                break
        extras = sorted(seq for seq in (settled | done) if seq > applied)
        return applied, tuple(extras)

    def settle(self, seqs: Iterable[int]) -> None:
        self.settled.update(seqs)
        outstanding, settled = self.outstanding, self.settled
        while outstanding and outstanding[0] in settled:
            settled.discard(outstanding.popleft())
        if not outstanding:
            self.settled = {seq for seq in settled if seq > self.high}


class ProgressTracker:
    """The records of each source accepted and not yet done, and the progress last committed
    for each (what the next write of it expects to find). Thread-safe.

    ``owner`` names the writing instance: its writes may only move progress rows it owns.
    """

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._committed: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._settled = threading.Condition(self._lock)

    def seed(self, source: str, applied_seq: int, extras: Iterable[int] = ()) -> None:
        """Start ``source`` from the progress read from the table (replay)."""
        extras = tuple(sorted(extras))
        with self._lock:
            self._sources[source] = _Source(applied_seq, extras)
            self._committed[source] = (applied_seq, extras)

    def wrote(self, marks: Iterable[ProgressMark]) -> None:
        """``marks`` were committed: the next writes of their sources expect them."""
        with self._lock:
            for mark in marks:
                self._committed[mark.source] = (mark.applied_seq, mark.applied_extra)

    def found(self, source: str, progress: tuple[int, Iterable[int]] | None) -> None:
        """The progress row of ``source`` was read after a conflict (None: there is none):
        expect it from now on."""
        with self._lock:
            if progress is None:
                self._committed.pop(source, None)
            else:
                self._committed[source] = (progress[0], tuple(sorted(progress[1])))

    def is_done(self, source: str, seq: int) -> bool:
        """Whether the record is done already by the progress seeded (replay skips it)."""
        with self._lock:
            state = self._sources.get(source)
            if state is None:
                return False
            return covers((state.applied(set())[0], state.settled), seq)

    def accepted(self, done: Done) -> None:
        """A record is accepted (sequence numbers increase per source)."""
        source, seq = done
        with self._lock:
            state = self._sources.get(source)
            if state is None:
                state = self._sources[source] = _Source()
            state.outstanding.append(seq)
            state.high = seq

    def accepted_all(self, done: Iterable[Done]) -> None:
        """Records accepted, in sequence order."""
        with self._lock:
            sources = self._sources
            for source, seq in done:
                state = sources.get(source)
                if state is None:
                    state = sources[source] = _Source()
                state.outstanding.append(seq)
                state.high = seq

    def marks(self, done: Iterable[Done]) -> list[ProgressMark]:
        """What a write committing ``done`` records: one mark per source among them."""
        by_source = _group(done)
        with self._lock:
            marks = []
            for source, seqs in by_source.items():
                state = self._sources.get(source)
                if state is not None:
                    applied, extras = state.applied(seqs)
                    expected = self._committed.get(source)
                    marks.append(ProgressMark(source, applied, extras, expected, self.owner))
            return marks

    def settle(self, done: Iterable[Done]) -> None:
        """``done`` are committed or handed over."""
        by_source = _group(done)
        with self._lock:
            for source, seqs in by_source.items():
                state = self._sources.get(source)
                if state is not None:
                    state.settle(seqs)
            self._settled.notify_all()

    def applied(self, source: str) -> int:
        """Every record of ``source`` up to this sequence number is done."""
        with self._lock:
            state = self._sources.get(source)
            return 0 if state is None else state.applied(set())[0]

    def floor(self, sources: Iterable[str], last: int) -> int:
        """Every record of ``sources`` (a journal whose last record is ``last``) up to this
        sequence number is done: what segments may be released up to."""
        with self._lock:
            floor = last
            for source in sources:
                state = self._sources.get(source)
                if state is None:
                    continue
                pending = next((s for s in state.outstanding if s not in state.settled), None)
                if pending is not None:
                    floor = min(floor, pending - 1)
            return floor

    def pending(self, prefix: str = "") -> int:
        """Records accepted and not done, of the sources whose name starts with ``prefix``."""
        with self._lock:
            return self._pending(prefix)

    def wait_done(self, prefix: str, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every record of the sources whose name starts
        with ``prefix`` to be done; True if they are."""
        with self._lock:
            if self._pending(prefix):
                self._settled.wait(timeout)
            return not self._pending(prefix)

    def _pending(self, prefix: str) -> int:
        return sum(
            sum(1 for seq in state.outstanding if seq not in state.settled)
            for source, state in self._sources.items()
            if source.startswith(prefix)
        )

    def forget(self, prefix: str) -> None:
        """Drop the sources whose name starts with ``prefix`` (their journal is gone)."""
        with self._lock:
            for source in [s for s in self._sources if s.startswith(prefix)]:
                del self._sources[source]
                self._committed.pop(source, None)


def _group(done: Iterable[Done]) -> Mapping[str, set[int]]:
    by_source: dict[str, set[int]] = {}
    for source, seq in done:
        seqs = by_source.get(source)
        if seqs is None:
            by_source[source] = {seq}
        else:
            seqs.add(seq)
    return by_source
