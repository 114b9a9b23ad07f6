"""The bounded queue between producers and the writers.

RowBuffer is its producers' side (``putting``) and its writers' side (``taking``) over the lanes
and counts they share (``lanes``).
"""

from __future__ import annotations

from .lanes import INTAKE, REPLAY
from .putting import Putting
from .taking import Taking

__all__ = ["INTAKE", "REPLAY", "RowBuffer"]


class RowBuffer(Putting, Taking):
    """Accepted rows, split by key into one lane per writer, under one lock and one bound.

    - ``maxsize`` bounds the rows waiting in every lane plus the rows writers have taken and
      the database has not read yet (``held``): producers refill the queue in short turns while
      a writer waits on the server, rather than in one long turn that keeps it from the GIL.
    - A key always goes to the same lane (its hash modulo the writers), so one writer writes
      it, in put order. Rows whose key is not known yet (accepted before the sink could read
      its catalog) wait in the intake lane: writer 0 checks them, and no lane is taken from
      while any wait or are being written, so that a later row of a key never overtakes them.
    - With ``combine``, a row whose key already waits (not yet taken) is combined into the
      waiting row in place and takes no room: a hot key is written once per batch.
    - Counts per lane grow under the lock with the insertion, so a flush knows exactly which
      rows came before it: the flush barrier needs no marker in the queue.
    - A writer is woken only when its batch may have become due (first row, a full batch,
      flush, close), not on every put.
    - ``put`` raises QueueClosed once closed, also to producers blocked on a full buffer, so
      that no row slips in behind a writer's last batch.
    """
