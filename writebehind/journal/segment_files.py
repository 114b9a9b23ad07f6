"""Segment files inside an instance directory: their names (``<segment number>.seg``, ten
digits, so names sort in write order), their listing in write order, the size and sequence
numbers of one being written, and the directory fsync that makes a new file's name durable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import JournalVersionError
from .framing import HEADER_SIZE, META_SEQ, _header_first_seq, _scan
from .private import open_private, read_private

_SUFFIX = ".seg"


@dataclass
class _Segment:
    """A segment of the writer's: its file, the sequence numbers it holds, its size."""

    number: int
    path: Path
    first_seq: int
    last_seq: int
    size: int


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(number: int) -> str:
    return f"{number:010d}{_SUFFIX}"


def _segments(directory: Path) -> list[tuple[int, Path]]:
    """(number, path) of the segment files, in write order: by the first sequence number each
    holds (its header's, or its first valid record's if the header is damaged), so that
    segments renamed out of order are still read in order; by name where that is unknown."""
    found: list[tuple[int, int, Path]] = []
    for path in directory.iterdir():
        if path.suffix == _SUFFIX and path.stem.isdigit():
            number = int(path.stem)
            found.append((_first_seq(path, number), number, path))
    found.sort()
    return [(number, path) for _first, number, path in found]


def _first_seq(path: Path, number: int) -> int:
    try:
        with os.fdopen(open_private(path, os.O_RDONLY), "rb") as f:
            first = _header_first_seq(f.read(HEADER_SIZE))
        if first is None:
            scan = _scan(read_private(path), 0)
            first = next((seq for seq, _s, _e in scan.records if seq != META_SEQ), None)
    except OSError:
        first = None  # unreadable: the reader sets it aside in its turn
    except JournalVersionError:
        first = None  # the reader raises it in its turn
    # Unknown: in name order, before any known one (segment numbers start at 1 as
    # sequence numbers do, and a segment never holds fewer records than its number minus 1).
    return number if first is None else first
