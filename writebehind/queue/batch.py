"""Batch assembly: pure functions over accepted rows, no threads, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from .._sink import Deletion, Merger, Params, Replaces
from ..journal.progress import Done


class Entry(NamedTuple):
    """One accepted row, converted once at put()."""

    key: Hashable
    params: Params
    row: Mapping[str, Any]
    enqueued_at: float
    weight: int = 1
    """How many accepted rows this one stands for (itself and the rows combined into it)."""
    marks: tuple[Done, ...] = ()
    """With a journal: the records this row stands for (its own and those combined into it)."""
    target: Any = None
    """None: the sink's row. A replayed row of other columns: the Target it is written to
    (``PostgresUpsert.target_for``), or Refused (it cannot be written)."""
    deletes: int = 0
    """How many of the accepted writes it stands for are deletes."""


new_entry: Callable[
    [tuple[Hashable, Params, Mapping[str, Any], float, int, tuple[Done, ...], Any, int]], Entry
] = partial(tuple.__new__, Entry)
"""Entry from a plain tuple, without the Python-level __new__ of a NamedTuple (on put's path)."""


class Refused(NamedTuple):
    """The target of a replayed row that cannot be written as the table is now: handed to
    ``on_failure`` with ``error`` (a SchemaError naming the column, say), never retried."""

    error: BaseException


class Coalesced(NamedTuple):
    """Rows with distinct keys, each holding the value put last, in key order (or first-seen
    order where the keys cannot be compared)."""

    entries: list[Entry]
    weights: list[int]
    """How many accepted rows each entry stands for (itself and the rows it replaced)."""


def combine(
    kept: Entry, newer: Entry, replaces: Replaces | None = None, merger: Merger | None = None
) -> Entry:
    """One row of a key standing for ``kept`` and ``newer`` (put later), by the rules of
    ``coalesce``; it keeps the time ``kept`` was put (how long the key has waited)."""
    weight = kept.weight + newer.weight
    marks = kept.marks + newer.marks
    deletes = kept.deletes + newer.deletes
    deleting = type(newer.params) is Deletion or type(kept.params) is Deletion
    if merger is not None and not deleting:  # a delete merges with nothing
        params = merger.merge(kept.params, newer.params)
        row = merger.row_of(params)
        return Entry(kept.key, params, row, kept.enqueued_at, weight, marks, None, deletes)
    if replaces is not None and not replaces(kept.params, newer.params):
        return kept._replace(weight=weight, marks=marks, deletes=deletes)
    return newer._replace(enqueued_at=kept.enqueued_at, weight=weight, marks=marks, deletes=deletes)


def coalesce(
    entries: Sequence[Entry], replaces: Replaces | None = None, merger: Merger | None = None
) -> Coalesced:
    """Keep one row per key, and sort the rows by key.

    PostgreSQL refuses to update one row twice in one statement. The row kept is the last put,
    or, given ``replaces``, the one that rule leaves (the first put for DO NOTHING, the highest
    version for a version column). Replaced rows are accounted to the row that replaced them.
    Writers in several processes (gunicorn workers) upserting overlapping keys lock the rows in
    the order they write them: in one order for all, they wait for each other instead of
    deadlocking.
    """
    if merger is not None:
        winners, weights = _coalesce_merging(entries, merger, replaces)
    elif replaces is not None:
        winners, weights = _coalesce_by(entries, replaces)
    else:
        latest = {entry.key: index for index, entry in enumerate(entries)}
        if len(latest) == len(entries):
            return _in_key_order(list(entries), [entry.weight for entry in entries])
        counts: dict[Hashable, int] = {}
        for entry in entries:
            counts[entry.key] = counts.get(entry.key, 0) + entry.weight
        winners = [entries[index] for index in latest.values()]
        weights = [counts[entry.key] for entry in winners]
    if len(winners) < len(entries):
        if any(entry.marks for entry in entries):
            winners = _with_all_marks(winners, entries)
        if any(entry.deletes for entry in entries):
            winners = _with_all_deletes(winners, entries)
    return _in_key_order(winners, weights)


def _with_all_deletes(winners: list[Entry], entries: Sequence[Entry]) -> list[Entry]:
    """Each winner counts the deletes among the rows of its key: writing it writes them."""
    deletes: dict[Hashable, int] = {}
    for entry in entries:
        deletes[entry.key] = deletes.get(entry.key, 0) + entry.deletes
    return [winner._replace(deletes=deletes[winner.key]) for winner in winners]


def _with_all_marks(winners: list[Entry], entries: Sequence[Entry]) -> list[Entry]:
    """Each winner carries the journal records of every row of its key: writing it does them."""
    marks: dict[Hashable, list[Done]] = {}
    for entry in entries:
        marks.setdefault(entry.key, []).extend(entry.marks)
    return [winner._replace(marks=tuple(marks[winner.key])) for winner in winners]


def _coalesce_by(entries: Sequence[Entry], replaces: Replaces) -> tuple[list[Entry], list[int]]:
    kept: dict[Hashable, int] = {}
    counts: dict[Hashable, int] = {}
    for index, entry in enumerate(entries):
        held = kept.get(entry.key)
        if held is None or replaces(entries[held].params, entry.params):
            kept[entry.key] = index
        counts[entry.key] = counts.get(entry.key, 0) + entry.weight
    winners = [entries[index] for index in kept.values()]
    return winners, [counts[entry.key] for entry in winners]


def _coalesce_merging(
    entries: Sequence[Entry], merger: Merger, replaces: Replaces | None
) -> tuple[list[Entry], list[int]]:
    merged: dict[Hashable, Entry] = {}
    counts: dict[Hashable, int] = {}
    for entry in entries:
        held = merged.get(entry.key)
        if held is None:
            merged[entry.key] = entry
            counts[entry.key] = entry.weight
            continue
        counts[entry.key] += entry.weight
        if type(entry.params) is Deletion or type(held.params) is Deletion:
            # A delete merges with nothing: the newest write stands, by the rule of versions.
            if replaces is None or replaces(held.params, entry.params):
                merged[entry.key] = entry
            continue
        params = merger.merge(held.params, entry.params)
        merged[entry.key] = entry._replace(params=params, row=merger.row_of(params))
    winners = list(merged.values())
    return winners, [counts[entry.key] for entry in winners]


def split_at_rewrites(entries: Sequence[Entry]) -> list[Sequence[Entry]]:
    """``entries`` (put order) cut before each row put after a delete of its key in the same
    part, so that each part can be one statement: a delete and a later upsert of one key cannot
    be (the upsert would meet the row the statement deletes), and a delete then a put must
    leave the put alone, not merged into the deleted row or ignored because of it."""
    parts: list[Sequence[Entry]] = []
    deleted: set[Hashable] = set()
    start = 0
    for index, entry in enumerate(entries):
        if type(entry.params) is Deletion:
            deleted.add(entry.key)
        elif deleted and entry.key in deleted:
            parts.append(entries[start:index])
            start = index
            deleted = set()
    parts.append(entries[start:] if start else entries)
    return parts


def _in_key_order(entries: list[Entry], weights: list[int]) -> Coalesced:
    try:
        # Hashable keys are not known to be comparable: mixed types or a None in a composite key
        # raise TypeError, a Decimal NaN raises decimal.InvalidOperation. Put order it is then.
        keys: list[Any] = [entry.key for entry in entries]
        order = sorted(range(len(entries)), key=keys.__getitem__)
    except Exception:
        return Coalesced(entries, weights)
    return Coalesced([entries[i] for i in order], [weights[i] for i in order])


def seconds_until_due(oldest_enqueued_at: float, now: float, flush_interval: float) -> float:
    """Seconds a partial batch whose oldest row was put at ``oldest_enqueued_at`` may wait."""
    return max(0.0, oldest_enqueued_at + flush_interval - now)
