"""Replay: the rows left in the journals of a queue's dead processes, queued again in put order.

Runs on a thread of its own once the sink is open (the progress lives in the database). Each
orphaned journal is read in sequence order; a record the progress table says is done is skipped,
the others go to the buffer's replay lane, which is written before any other, so that a row put
since never loses to an older one of its key. A journal is deleted once every record of it is
done, and then its progress rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial

from .._sink import Deletion, Sink
from ..journal.keeper import (
    QueueJournal,
    decode_layout,
    decode_record,
    lane_name,
    lane_of,
    lanes_of,
)
from ..journal.progress import Done, covers
from ..journal.segments import META_SEQ, JournalVersionError, Orphan
from .batch import Entry, new_entry
from .buffer import RowBuffer
from .metrics import QueueStats
from .remap import Remapper

__all__ = ["Replay"]

logger = logging.getLogger("writebehind")

_RETRY_DELAY = (0.1, 5.0)  # first and longest wait between reads of the progress table


class _Stopped(Exception):
    """The queue was closed or abandoned: what is not queued stays in its journal."""


class Replay:
    """Replays ``orphans`` (journals locked by this process) into ``buffer``."""

    def __init__(
        self,
        *,
        name: str,
        orphans: list[Orphan],
        journal: QueueJournal,
        buffer: RowBuffer,
        sink: Sink,
        stats: QueueStats,
        opened: Callable[[], bool],
        stop: threading.Event,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.orphans = orphans
        self.journal = journal
        self.buffer = buffer
        self.sink = sink
        self.stats = stats
        self.opened = opened
        self.stop = stop
        self.clock = clock
        self.thread: threading.Thread | None = None
        self.fed = threading.Event()
        """Set once every row to replay is queued (or replay stopped)."""

    def start(self) -> None:
        """Hold the lanes and start the thread (``writebehind-<name>-replay``)."""
        self.buffer.start_replay()
        self.thread = threading.Thread(
            target=self.run, name=f"writebehind-{self.name}-replay", daemon=True
        )
        self.thread.start()

    def run(self) -> None:
        fed: list[Orphan] = []  # queued whole, not yet removed
        settled: list[Orphan] = []  # removed (or released) already
        try:
            self._wait_for_sink()
            for orphan in self.orphans:
                self._feed(orphan)
                fed.append(orphan)
                # Those already written go at once: a process killed during a long replay
                # leaves the next one less to read again.
                for done in [o for o in fed if not self._pending(o)]:
                    self._remove(done)
                    fed.remove(done)
                    settled.append(done)
        except _Stopped:
            pass
        except BaseException:  # the rows stay in their journal; the lanes must go on
            logger.exception(
                "queue %s: replay failed; the rest waits for the next start", self.name
            )
        finally:
            self.buffer.end_replay()
            self.fed.set()
        for orphan in self.orphans:
            if orphan in settled:
                continue
            if orphan in fed and self._wait_done(orphan):
                self._remove(orphan)
            else:
                orphan.release()

    def _pending(self, orphan: Orphan) -> int:
        return self.journal.tracker.pending(_prefix(self.journal.queue, orphan))

    def _wait_for_sink(self) -> None:
        # Also once the queue is closed: close() drains the replay first (the exit deadline
        # stops it).
        while not self.opened():
            if self.stop.wait(0.05):
                raise _Stopped

    def _feed(self, orphan: Orphan) -> None:
        prefix = _prefix(self.journal.queue, orphan)
        tracker = self.journal.tracker
        progress = self._claim(orphan, prefix)
        for source, (applied, extras) in progress.items():
            tracker.seed(source, applied, extras)
        sources: dict[int, str] = {}  # lane number -> source
        remapper = Remapper(self.sink)
        batch = max(1, self.buffer.batch_size)
        chunk: list[Entry] = []
        replayed = skipped = unreadable = 0
        now = self.clock()  # when the rows are put again, by the queue's clock
        try:
            for record in orphan.records():
                seq = record.seq
                if seq == META_SEQ:
                    unreadable += self._learn(remapper, orphan, record.payload)
                    continue
                try:
                    number = lane_of(record.payload)
                    if number not in sources:
                        sources[number] = prefix + lane_name(number)
                    source = sources[number]
                    if covers(progress.get(source), seq):
                        skipped += 1  # written before its process died: not even decoded
                        continue
                    key, params, mapping, target = remapper.row(decode_record(record.payload))
                except ValueError as error:
                    unreadable += 1
                    logger.error(
                        "queue %s: journal %s record %d cannot be read (%s); set aside",
                        self.name,
                        orphan.path,
                        seq,
                        error,
                    )
                    continue
                done = (_done((source, seq)),)
                deletes = int(type(params) is Deletion)
                chunk.append(new_entry((key, params, mapping, now, 1, done, target, deletes)))
                if len(chunk) >= batch:
                    self._queue(chunk)
                    replayed += len(chunk)
                    chunk = []
                    now = self.clock()
            self._queue(chunk)
            replayed += len(chunk)
        except JournalVersionError as error:
            logger.error("queue %s: journal %s left as it is: %s", self.name, orphan.path, error)
            raise _Stopped from None
        finally:
            stats = orphan.reader.stats
            corrupt = stats.lost_sequences + unreadable
            if corrupt:
                self.stats.corrupt_records(corrupt)
            logger.info(
                "queue %s: replayed %d rows from journal %s (%d already written, %d set aside)",
                self.name,
                replayed,
                orphan.path,
                skipped,
                corrupt,
            )

    def _learn(self, remapper: Remapper, orphan: Orphan, payload: bytes) -> int:
        """Read a meta record (a layout); 1 if it cannot be (counted as damage), else 0."""
        try:
            remapper.learn(*decode_layout(payload))
        except ValueError as error:
            logger.error(
                "queue %s: journal %s has a layout record that cannot be read (%s); rows of "
                "that layout are set aside, unless another copy of it is found",
                self.name,
                orphan.path,
                error,
            )
            return 1
        return 0

    def _queue(self, chunk: list[Entry]) -> None:
        """Track and queue ``chunk`` (read in put order), as put at this moment."""
        if not chunk:
            return
        self.journal.tracker.accepted_all(entry.marks[0] for entry in chunk)
        backlog = 2 * self.buffer.batch_size
        while not self.buffer.feed_replay(chunk, backlog, 1.0):
            if self.stop.is_set():
                raise _Stopped
        self.stats.replayed_rows(len(chunk))

    def _claim(self, orphan: Orphan, prefix: str) -> Mapping[str, tuple[int, frozenset[int]]]:
        """Take the dead process's progress rows over and read them. A write it left running
        on the server (blocked on a lock, say) waits for the claim or is refused after it:
        it cannot commit behind the replay's back."""
        claim = getattr(self.sink, "claim_progress", None)
        if claim is None or not getattr(self.sink, "records_progress", False):
            return {}
        sources = [prefix + lane for lane in lanes_of(orphan.path)]
        delay = _RETRY_DELAY[0]
        while True:
            try:
                progress: Mapping[str, tuple[int, frozenset[int]]] = claim(
                    prefix, sources, self.journal.tracker.owner
                )
                return progress
            except Exception as error:
                logger.warning(
                    "queue %s: reading the journal's progress failed (%s); retrying in %.1fs",
                    self.name,
                    error,
                    delay,
                )
            if self.stop.wait(delay):
                raise _Stopped
            delay = min(delay * 2, _RETRY_DELAY[1])

    def _wait_done(self, orphan: Orphan) -> bool:
        prefix = _prefix(self.journal.queue, orphan)
        while not self.journal.tracker.wait_done(prefix, 1.0):
            if self.stop.is_set():  # abandoned: what is not done stays for the next start
                return False
        return True

    def _remove(self, orphan: Orphan) -> None:
        prefix = _prefix(self.journal.queue, orphan)
        try:
            orphan.remove()  # first: a progress row without its journal is harmless
        except OSError:
            logger.exception("queue %s: removing journal %s failed", self.name, orphan.path)
            orphan.release()
            return
        # Its progress rows stay: a write of the dead process still running on the server
        # must keep finding them claimed.
        self.journal.tracker.forget(prefix)


def _prefix(queue: str, orphan: Orphan) -> str:
    return f"{queue}/{orphan.path.name}/"


_done: Callable[[tuple[str, int]], Done] = partial(tuple.__new__, Done)
