"""Append-only segment files: the file layer of the durable journal, in one import.

Layout: ``<root>/<queue name>/<instance>/`` holds one process's journal, locked while a process
uses it; inside, segment files named ``<segment number>.seg``, each a header and framed records
numbered by sequence. Its parts, each with one job:

- ``framing``: a segment's bytes (header, records, CRCs) and the scan that finds its valid
  records and damaged ranges; the format is described there.
- ``segment_files``: segment file names and their listing in write order.
- ``reader``: :class:`SegmentReader`, records read back in order, a torn tail cut off and
  damage set aside.
- ``instances``: instance directories: created and locked, taken over (:class:`Orphan`) by
  the next process once their own is gone, removed.
- ``writer`` and ``group_commit``: :class:`SegmentWriter`, appending, rotating, bounding and
  releasing segments, and ``fdatasync`` shared by the threads waiting.
- ``errors``: the journal's exceptions.

Nothing here knows what a payload is; the queue encodes rows.
"""

from __future__ import annotations

from .errors import (
    JournalClosed,
    JournalError,
    JournalFull,
    JournalSyncError,
    JournalVersionError,
)
from .framing import (
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    META_SEQ,
    RECORD_OVERHEAD,
    VERSION,
    encode_header,
    encode_record,
)
from .group_commit import SyncMode
from .instances import Orphan, instance_name, take_over
from .reader import ReadStats, Record, SegmentReader
from .writer import DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES, SegmentWriter

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_SEGMENT_BYTES",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD",
    "META_SEQ",
    "RECORD_OVERHEAD",
    "VERSION",
    "JournalClosed",
    "JournalError",
    "JournalFull",
    "JournalSyncError",
    "JournalVersionError",
    "Orphan",
    "ReadStats",
    "Record",
    "SegmentReader",
    "SegmentWriter",
    "SyncMode",
    "encode_header",
    "encode_record",
    "instance_name",
    "take_over",
]
