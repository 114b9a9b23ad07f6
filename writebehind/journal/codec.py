"""One converted row, its key and parameters, to bytes and back: the journal's record payload.

``decode(encode(key, params))`` gives back values equal to the ones given and of the same
types (a NaN is a NaN of the same bits, -0.0 stays negative, a Decimal keeps its exponent, a
datetime its tzinfo). The format is plain and versioned, not pickle: a payload names no code
to run, only Enum classes to look up (see below).

Layout (integers little-endian)::

    version      1 byte, FORMAT_VERSION
    columns      u16, then one value per column
    key          one value; KEY_REF n stands for "the object of column n"
    crc          u32, zlib.crc32 of every byte before it

Each value is a one-byte tag, then what the tag says (see the ``_T_*`` constants): fixed-size
fields packed with ``struct``, texts as a length and UTF-8, containers as a count and their
items. The CRC makes a damaged payload an error, never a different value: the journal's record
frame may carry a CRC of its own, this one keeps the codec safe to use alone.

What it takes: the values ``prepare`` leaves in a row (json columns are JSON text by then,
timestamptz values aware datetimes) and what psycopg adapts: None, bool, int (any size),
float, str (lone surrogates too), bytes, bytearray, memoryview, Decimal, date, time, datetime,
timedelta, UUID, list (arrays), tuple (composites), dict (inside Json), psycopg's Json and
Jsonb, Range and Multirange classes and numeric wrappers (Int4, Float8, ...), the ipaddress
types and Enum members of a module-level class. Subclasses of these (a NamedTuple, a str
subclass) are refused rather than written as their base type: an adapter registered for the
subclass could write something else.

Time zones: ``timezone`` instances (with their name) and ``ZoneInfo`` zones (by key) come back
as they were. A ZoneInfo datetime also records its UTC offset: if the zone is missing when the
payload is read, or its rules changed since, the value comes back with a fixed offset at the
same instant (what PostgreSQL would have been sent). Other tzinfo classes (pytz, dateutil) are
kept as their fixed offset at that instant.

Enum members are stored as module, qualified class name and value; ``decode`` imports the module
and checks that the name is an Enum class. A journal is as trusted as the application's code.

This module frames the payload (version, column count, CRC) and is the codec's only entry point;
its parts: ``codec_format`` (tags, field layouts, the classes known by position),
``codec_encode`` and ``codec_decode`` (one value each way), ``codec_keys`` (the key).
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable

from .._sink import Params
from .codec_decode import _DECODERS
from .codec_encode import _ENCODERS, _encode_other
from .codec_format import (
    _BH,
    _CRC_RESIDUE,
    _H,
    _I,
    FORMAT_VERSION,
    MAX_DEPTH,
    _Corrupt,
    _Unencodable,
)
from .codec_keys import _decode_key, _encode_key

__all__ = ["FORMAT_VERSION", "MAX_DEPTH", "decode", "encode"]


def encode(key: Hashable, params: Params) -> bytes:
    """The payload for one row: ``params`` as ``prepare`` returned them, and their ``key``.

    TypeError naming the type and the column (or the key) for a value the format cannot hold;
    ValueError for containers nested deeper than MAX_DEPTH (or that contain themselves).
    Pure: no state, safe from any thread.
    """
    if type(params) is not tuple:
        raise TypeError(f"params must be a tuple, got {type(params).__name__}")
    if len(params) > 0xFFFF:
        raise ValueError(f"a row has at most 65535 columns, got {len(params)}")
    out = bytearray(_BH.pack(FORMAT_VERSION, len(params)))
    encoders = _ENCODERS
    for position, value in enumerate(params):
        encoder = encoders.get(type(value))
        try:
            if encoder is not None:
                encoder(value, out, 0)
            else:
                _encode_other(value, out, 0)
        except _Unencodable as error:
            raise TypeError(f"column {position}: {error}") from None
        except (ValueError, RecursionError) as error:
            raise ValueError(f"column {position}: {error}") from None
    try:
        _encode_key(key, params, out)
    except _Unencodable as error:
        raise TypeError(f"the key: {error}") from None
    except (ValueError, RecursionError) as error:
        raise ValueError(f"the key: {error}") from None
    out += _I.pack(zlib.crc32(out))
    return bytes(out)


def decode(payload: bytes | bytearray | memoryview) -> tuple[Hashable, Params]:
    """The key and parameters ``encode`` was given, as new objects of the same types.

    ValueError, saying what is wrong, for a payload that is truncated, damaged (CRC), of
    another format version or otherwise not one ``encode`` made; never another exception, and
    never a value other than the one encoded. Pure: safe from any thread.
    """
    data = bytes(payload)
    if not data:
        raise ValueError("journal payload is empty")
    if data[0] != FORMAT_VERSION:
        raise ValueError(
            f"journal payload has format version {data[0]}, this writebehind reads version "
            f"{FORMAT_VERSION} (written by another version, or damaged)"
        )
    if len(data) < 7:
        raise ValueError(f"journal payload is truncated ({len(data)} bytes)")
    end = len(data) - 4
    # The CRC of a payload followed by its own CRC is a constant (the CRC-32 residue): one
    # pass over the bytes, no slice.
    if zlib.crc32(data) != _CRC_RESIDUE:
        raise ValueError(f"journal payload is damaged: CRC mismatch ({len(data)} bytes)")
    try:
        (count,) = _H.unpack_from(data, 1)
        pos = 3
        values = []
        decoders = _DECODERS
        for _ in range(count):
            value, pos = decoders[data[pos]](data, pos + 1, 0)
            values.append(value)
        params = tuple(values)
        key, pos = _decode_key(data, pos, params)
    except _Corrupt as error:
        raise ValueError(f"journal payload is not valid: {error}") from None
    except Exception as error:  # IndexError, struct.error, decimal's, an Enum's _missing_...
        raise ValueError(f"journal payload is not valid: {type(error).__name__}: {error}") from None
    if pos != end:
        where = f"{end - pos} bytes after the key" if pos < end else "the key runs past the end"
        raise ValueError(f"journal payload is not valid: {where}")
    return key, params
