"""The bytes of a segment file: its header, the framed records after it, and the scan that
finds a segment's valid records and the damaged ranges between them.

::

    header  (24 bytes)  magic b"wbjournl" | version u16 | flags u16 (0) | first seq u64 | crc32 u32
    record  (16 bytes + payload)  length u32 | crc32 u32 | seq u64 | payload

All integers little-endian. A record's CRC covers its length, its sequence number and its payload,
so a record moved, cut or overwritten by another is detected, and a record can be recognised
without its segment's header (the reader resynchronises on the next valid record after damage,
as PostgreSQL's WAL and LevelDB's log do). The CRC is zlib's CRC-32: CRC-32C is not in the
standard library, and CRC-32 detects every burst error up to 32 bits and any odd number of flipped
bits, which is what torn writes and bit rot produce; the cost is small next to the system calls.

Sequence numbers are per instance, start at 1, and increase by one per record. They are
contiguous, so the reader counts a gap as records lost. A record numbered 0 is a *meta* record
(version 2): a payload that describes the records after it (the queue's: what the columns of
its rows are), given to :meth:`SegmentWriter.describe`. Every segment holds, right after its
header, each meta record described before it was made, and one described later is written
before the next record: so every record is preceded, in its own segment, by the meta records
it may need, whatever segments are released. Version 1 segments have none.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import JournalVersionError

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAYLOAD",
    "META_SEQ",
    "RECORD_OVERHEAD",
    "VERSION",
    "encode_header",
    "encode_record",
]

MAGIC = b"wbjournl"
VERSION = 2
_READ_VERSIONS = (1, 2)  # version 1 (no meta records) is still read
META_SEQ = 0
"""The sequence number of a meta record (see the module's docstring)."""
_HEADER = struct.Struct("<8sHHQI")
_HEADER_BODY = struct.Struct("<8sHHQ")
HEADER_SIZE = _HEADER.size
_RECORD = struct.Struct("<IIQ")
_RECORD_CRC_INPUT = struct.Struct("<IQ")
RECORD_OVERHEAD = _RECORD.size
# A bound on a payload's length: a damaged length field beyond it is rejected without reading on.
MAX_PAYLOAD = 64 * 1024 * 1024


def encode_header(first_seq: int) -> bytes:
    """The header of a segment whose first record has sequence number ``first_seq``."""
    body = _HEADER_BODY.pack(MAGIC, VERSION, 0, first_seq)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_record(seq: int, payload: bytes) -> bytes:
    """One framed record."""
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_RECORD_CRC_INPUT.pack(length, seq)))
    return _RECORD.pack(length, crc, seq) + payload


def _header_first_seq(data: bytes) -> int | None:
    """The first sequence number from a valid header, None if the header is damaged."""
    if len(data) < HEADER_SIZE:
        return None
    magic, version, _flags, first_seq, crc = _HEADER.unpack_from(data)
    if magic != MAGIC or zlib.crc32(data[: _HEADER_BODY.size]) != crc:
        return None
    if version not in _READ_VERSIONS:
        raise JournalVersionError(
            f"journal segment format version {version} is not supported (this writebehind reads "
            f"version {VERSION}); it was written by a newer writebehind"
        )
    return int(first_seq)


_INCOMPLETE = -1
_BAD = -2


def _record_at(data: bytes, off: int, after: int) -> tuple[int, int]:
    """(seq, end offset) of a valid record at ``off`` with seq > ``after``; or (_INCOMPLETE, 0)
    when a plausible record runs past the end of the data; or (_BAD, 0)."""
    n = len(data)
    if off + RECORD_OVERHEAD > n:
        return _INCOMPLETE, 0
    length, crc, seq = _RECORD.unpack_from(data, off)
    if length > MAX_PAYLOAD or (seq <= after and seq != META_SEQ):
        return _BAD, 0
    end = off + RECORD_OVERHEAD + length
    if end > n:
        return _INCOMPLETE, 0
    body = memoryview(data)[off + RECORD_OVERHEAD : end]
    if zlib.crc32(body, zlib.crc32(_RECORD_CRC_INPUT.pack(length, seq))) != crc:
        return _BAD, 0
    return seq, end


def _resync(data: bytes, start: int, after: int) -> int | None:
    """The offset of the next valid record from ``start`` on, or None."""
    for off in range(start, len(data) - RECORD_OVERHEAD + 1):
        seq, _end = _record_at(data, off, after)
        if seq >= 0:
            return off
    return None


@dataclass
class _Scan:
    records: list[tuple[int, int, int]]  # (seq, start, end)
    damaged: list[tuple[int, int]]  # (start, end) byte ranges, header included
    torn_tail: int | None  # the offset of an incomplete last record


def _scan(data: bytes, after: int) -> _Scan:
    """Every valid record of one segment's bytes, and the damaged ranges between them."""
    records: list[tuple[int, int, int]] = []
    damaged: list[tuple[int, int]] = []
    torn: int | None = None
    if _header_first_seq(data) is None:
        damaged.append((0, min(HEADER_SIZE, len(data))))
    off = HEADER_SIZE
    last = after
    while off < len(data):
        seq, end = _record_at(data, off, last)
        if seq >= 0:
            records.append((seq, off, end))
            last = max(last, seq)
            off = end
            continue
        nxt = _resync(data, off + 1, last)
        if nxt is None:
            if seq == _INCOMPLETE:
                torn = off
            else:
                damaged.append((off, len(data)))
            break
        damaged.append((off, nxt))
        off = nxt
    # A damaged header followed by nothing is one damaged range, not a header plus a tail.
    return _Scan(records, damaged, torn)
