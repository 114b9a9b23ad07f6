"""A queue's journal at its two ends: opened at the first put (with the journals of dead
processes taken over for replay), and closed once the writers are done (removed if every row of
it is done, else kept for the next process)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .._sink import Sink
from ..journal.keeper import QueueJournal
from ..journal.options import Journal
from ..journal.segments import take_over
from .buffer import RowBuffer
from .metrics import QueueStats
from .replay import Replay
from .writers import Writer

__all__ = ["close_journal", "open_journal"]

logger = logging.getLogger("writebehind")


def open_journal(
    options: Journal,
    *,
    name: str,
    writers: list[Writer],
    buffer: RowBuffer,
    sink: Sink,
    stats: QueueStats,
    opened: Callable[[], bool],
    stop: threading.Event,
    clock: Callable[[], float],
) -> tuple[QueueJournal, Replay | None]:
    """This process's journal, and the replay of the journals of dead processes (None: none);
    their lanes are held from now, so that no row put from now on is written before them."""
    journal = QueueJournal(options, name, len(writers))
    stats.journal_bytes = lambda: journal.disk_bytes
    for writer in writers:
        writer.delivery.keep_journal(journal)
    orphans = take_over(options.root, name)
    if not orphans:
        return journal, None
    replay = Replay(
        name=name,
        orphans=orphans,
        journal=journal,
        buffer=buffer,
        sink=sink,
        stats=stats,
        opened=opened,
        stop=stop,
        clock=clock,
    )
    buffer.start_replay()
    return journal, replay


def close_journal(journal: QueueJournal, *, name: str, sink: Sink, stats: QueueStats) -> None:
    """Once the writers are done: the journal is removed if every row of it is done (and its
    progress rows with it), else kept for the next process."""
    removed = journal.close()
    stats.journal_bytes = lambda: 0  # this process holds no journal any more
    stats.sync()
    if removed:
        forget = getattr(sink, "forget_progress", None)
        if forget is not None and getattr(sink, "records_progress", False):
            try:
                forget(journal.prefix)
            except Exception as error:  # harmless: no journal refers to them
                logger.info("queue %s: its progress rows are kept (%s)", name, error)
    elif journal.all_done():  # closing it failed, and said why
        logger.warning(
            "queue %s: every row is written, but the journal %s is left on disk: the next "
            "start finds its rows written and removes it",
            name,
            journal.path,
        )
    else:
        logger.warning(
            "queue %s: %d rows not written are kept in the journal %s for the next start",
            name,
            journal.tracker.pending(journal.prefix),
            journal.path,
        )
