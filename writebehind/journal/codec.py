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
"""

from __future__ import annotations

import enum
import importlib
import ipaddress
import struct
import uuid
import zlib
from collections.abc import Callable, Hashable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types import multirange, numeric
from psycopg.types import range as pg_range
from psycopg.types.json import Json, Jsonb

from .._keys import NAN_KEY, NaN
from .._sink import Params

__all__ = ["FORMAT_VERSION", "MAX_DEPTH", "decode", "encode"]

FORMAT_VERSION = 1
"""The first byte of every payload; ``decode`` refuses any other."""

MAX_DEPTH = 100
"""How deep containers may nest (lists of lists, Json objects): a deeper value is refused
with ValueError, and a payload claiming more is corrupt (no RecursionError either way)."""

# Tags. Numbers are part of the format: never renumber, only add.
_T_NONE = 0
_T_FALSE = 1
_T_TRUE = 2
_T_INT64 = 3
_T_BIGINT = 4
_T_FLOAT = 5
_T_STR8 = 6
_T_STR32 = 7
_T_STR_SURROGATES = 8
_T_BYTES = 9
_T_BYTEARRAY = 10
_T_MEMORYVIEW = 11
_T_DECIMAL = 12
_T_DATE = 13
_T_TIME = 14
_T_DATETIME = 15
_T_TIMEDELTA = 16
_T_UUID = 17
_T_LIST = 18
_T_TUPLE = 19
_T_DICT = 20
_T_JSON = 21
_T_JSONB = 22
_T_IP = 23
_T_RANGE = 24
_T_MULTIRANGE = 25
_T_NUMERIC = 26
_T_ENUM = 27
_T_KEY_REF = 28
_T_NAN_KEY = 29

# Time zone kinds, after the fields of a time or datetime.
_TZ_NAIVE = 0
_TZ_UTC = 1
_TZ_FIXED = 2
_TZ_FIXED_NAMED = 3
_TZ_ZONE = 4

_BOUNDS = ("", "[)", "(]", "()", "[]")  # index 0: an empty range
_BOUND_CODES = {bounds: code for code, bounds in enumerate(_BOUNDS)}

# Classes known by position: a payload holds the index, so these lists only ever grow.
_RANGES: tuple[type[pg_range.Range[Any]], ...] = (
    pg_range.Range,
    pg_range.Int4Range,
    pg_range.Int8Range,
    pg_range.NumericRange,
    pg_range.DateRange,
    pg_range.TimestampRange,
    pg_range.TimestamptzRange,
)
_MULTIRANGES: tuple[type[multirange.Multirange[Any]], ...] = (
    multirange.Multirange,
    multirange.Int4Multirange,
    multirange.Int8Multirange,
    multirange.NumericMultirange,
    multirange.DateMultirange,
    multirange.TimestampMultirange,
    multirange.TimestamptzMultirange,
)
_NUMERICS: tuple[type[int] | type[float], ...] = (
    numeric.Int2,
    numeric.Int4,
    numeric.Int8,
    numeric.IntNumeric,
    numeric.Oid,
    numeric.Float4,
    numeric.Float8,
)
_IPS: tuple[Callable[[str], Any], ...] = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)
_RANGE_INDEX = {cls: index for index, cls in enumerate(_RANGES)}
_MULTIRANGE_INDEX = {cls: index for index, cls in enumerate(_MULTIRANGES)}
_NUMERIC_INDEX = {cls: index for index, cls in enumerate(_NUMERICS)}
_IP_INDEX: dict[type, int] = {cls: index for index, cls in enumerate(_IPS)}  # type: ignore[misc]

_B = struct.Struct("<B")
_BB = struct.Struct("<BB")
_BH = struct.Struct("<BH")
_BI = struct.Struct("<BI")
_Bq = struct.Struct("<Bq")
_Bd = struct.Struct("<Bd")
_H = struct.Struct("<H")
_I = struct.Struct("<I")
_q = struct.Struct("<q")
_d = struct.Struct("<d")
_DATE = struct.Struct("<BHBB")
_TIME = struct.Struct("<BBBBIB")  # tag, hour, minute, second, microsecond, fold
_DATETIME = struct.Struct("<BHBBBBBIB")  # tag, year, ..., microsecond, fold
_TIMEDELTA = struct.Struct("<BiiI")
_CRC_RESIDUE = 0x2144DF1C
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

_Out = bytearray
_Encoder = Callable[[Any, _Out, int], None]


class _Unencodable(TypeError):
    """A value of a type the format has no tag for (the caller adds where it was)."""


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


# --- encoding ---------------------------------------------------------------------------


def _encode_value(value: Any, out: _Out, depth: int) -> None:
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        encoder(value, out, depth)
    else:
        _encode_other(value, out, depth)


def _encode_other(value: Any, out: _Out, depth: int) -> None:
    """Types found by isinstance, after the exact-type table missed."""
    if isinstance(value, enum.Enum):
        _encode_enum(value, out, depth)
        return
    kind = type(value)
    if kind in _RANGE_INDEX:
        _encode_range(value, out, depth)
    elif kind in _MULTIRANGE_INDEX:
        _encode_multirange(value, out, depth)
    elif kind in _NUMERIC_INDEX:
        out += _BB.pack(_T_NUMERIC, _NUMERIC_INDEX[kind])
        _encode_value(float(value) if isinstance(value, float) else int(value), out, depth)
    elif kind in _IP_INDEX:
        out += _BB.pack(_T_IP, _IP_INDEX[kind])
        _encode_str(str(value), out, depth)
    else:
        raise _Unencodable(
            f"a value of type {_type_name(kind)} cannot be journaled "
            f"({_short(value)}); convert it to a plain type first"
        )


def _encode_none(_value: None, out: _Out, _depth: int) -> None:
    out.append(_T_NONE)


def _encode_bool(value: bool, out: _Out, _depth: int) -> None:
    out.append(_T_TRUE if value else _T_FALSE)


def _encode_int(value: int, out: _Out, _depth: int) -> None:
    if _INT64_MIN <= value <= _INT64_MAX:
        out += _Bq.pack(_T_INT64, value)
    else:
        size = (value.bit_length() + 8) // 8  # one more bit for the sign
        out += _BI.pack(_T_BIGINT, size)
        out += value.to_bytes(size, "little", signed=True)


def _encode_float(value: float, out: _Out, _depth: int) -> None:
    out += _Bd.pack(_T_FLOAT, value)  # IEEE 754 bits: -0.0 and NaN payloads kept


def _encode_str(value: str, out: _Out, _depth: int) -> None:
    try:
        data = value.encode()
    except UnicodeEncodeError:  # lone surrogates: kept, under a tag of their own
        data = value.encode("utf-8", "surrogatepass")
        out += _BI.pack(_T_STR_SURROGATES, len(data))
    else:
        if len(data) < 256:
            out += _BB.pack(_T_STR8, len(data))
        else:
            out += _BI.pack(_T_STR32, len(data))
    out += data


def _encode_bytes(value: bytes, out: _Out, _depth: int) -> None:
    out += _BI.pack(_T_BYTES, len(value))
    out += value


def _encode_bytearray(value: bytearray, out: _Out, _depth: int) -> None:
    out += _BI.pack(_T_BYTEARRAY, len(value))
    out += value


def _encode_memoryview(value: memoryview, out: _Out, depth: int) -> None:
    # Kept with its format and shape: a view of ints compares by its items, not its bytes.
    data = value.tobytes()
    out += _BI.pack(_T_MEMORYVIEW, len(data))
    out += data
    _encode_str(value.format, out, depth)
    out += _B.pack(value.ndim)
    for size in value.shape or ():
        out += _I.pack(size)


def _encode_decimal(value: Decimal, out: _Out, _depth: int) -> None:
    # str() is exact (digits, exponent, sign, NaN, sNaN, Infinity) and Decimal(str) reads it
    # back whatever the context's precision.
    data = str(value).encode("ascii")
    out += _BI.pack(_T_DECIMAL, len(data))
    out += data


def _encode_date(value: date, out: _Out, _depth: int) -> None:
    out += _DATE.pack(_T_DATE, value.year, value.month, value.day)


def _encode_time(value: time, out: _Out, depth: int) -> None:
    out += _TIME.pack(
        _T_TIME, value.hour, value.minute, value.second, value.microsecond, value.fold
    )
    _encode_tz(value.tzinfo, _offset_of(value), out, depth)


def _encode_datetime(value: datetime, out: _Out, depth: int) -> None:
    out += _DATETIME.pack(
        _T_DATETIME,
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        value.fold,
    )
    tz = value.tzinfo
    if tz is timezone.utc:  # the common case, first
        out.append(_TZ_UTC)
    else:
        _encode_tz(tz, _offset_of(value), out, depth)


def _offset_of(value: time | datetime) -> timedelta | None:
    try:
        return value.utcoffset()
    except Exception as error:  # a tzinfo class of the application's
        raise _Unencodable(
            f"a tzinfo of type {_type_name(type(value.tzinfo))} whose utcoffset() raised "
            f"{error!r} cannot be journaled"
        ) from None


def _encode_tz(tz: tzinfo | None, offset: timedelta | None, out: _Out, depth: int) -> None:
    if tz is None:
        out.append(_TZ_NAIVE)
    elif tz is timezone.utc:
        out.append(_TZ_UTC)
    elif type(tz) is ZoneInfo and tz.key is not None:
        # The offset too: if the zone is gone or its rules changed when the payload is read,
        # the same instant is kept with a fixed offset.
        out.append(_TZ_ZONE)
        _encode_str(tz.key, out, depth)
        _encode_offset(offset, out)
    elif type(tz) is timezone:
        args = tz.__getinitargs__()  # type: ignore[attr-defined]
        if len(args) == 2:  # the name given to timezone(offset, name), kept
            out.append(_TZ_FIXED_NAMED)
            _encode_offset(args[0], out)
            _encode_str(args[1], out, depth)
        else:
            out.append(_TZ_FIXED)
            _encode_offset(args[0], out)
    elif offset is not None:  # another tzinfo class: its offset at this instant
        out.append(_TZ_FIXED)
        _encode_offset(offset, out)
    else:
        raise _Unencodable(
            f"a tzinfo of type {_type_name(type(tz))} without a UTC offset cannot be "
            "journaled; use a ZoneInfo or a timezone"
        )


def _encode_offset(offset: timedelta | None, out: _Out) -> None:
    if offset is None:
        out.append(0)
    else:
        out.append(1)
        out += _q.pack(offset // timedelta(microseconds=1))


def _encode_timedelta(value: timedelta, out: _Out, _depth: int) -> None:
    out += _TIMEDELTA.pack(_T_TIMEDELTA, value.days, value.seconds, value.microseconds)


def _encode_uuid(value: uuid.UUID, out: _Out, _depth: int) -> None:
    out.append(_T_UUID)
    out += value.bytes


def _encode_sequence(tag: int) -> _Encoder:
    def encode_sequence(value: list[Any] | tuple[Any, ...], out: _Out, depth: int) -> None:
        if depth >= MAX_DEPTH:
            raise ValueError(f"containers nested deeper than {MAX_DEPTH}")
        out += _BI.pack(tag, len(value))
        encoders = _ENCODERS
        for item in value:
            encoder = encoders.get(type(item))
            if encoder is not None:
                encoder(item, out, depth + 1)
            else:
                _encode_other(item, out, depth + 1)

    return encode_sequence


def _encode_dict(value: dict[Any, Any], out: _Out, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise ValueError(f"containers nested deeper than {MAX_DEPTH}")
    out += _BI.pack(_T_DICT, len(value))
    for item_key, item in value.items():
        _encode_value(item_key, out, depth + 1)
        _encode_value(item, out, depth + 1)


def _verbatim(text: Any) -> Any:
    """The ``dumps`` of a Json read back whose text was made at encoding: it is sent as is."""
    return text


def _encode_json(tag: int) -> _Encoder:
    def encode_json(value: Json | Jsonb, out: _Out, depth: int) -> None:
        out.append(tag)
        if value.dumps is None or value.dumps is _verbatim:
            # The connection's json dumps serializes it at write time, as without a journal.
            out.append(0 if value.dumps is None else 1)
            _encode_value(value.obj, out, depth + 1)
            return
        # A dumps of the caller's cannot be stored: its text is made now and kept instead.
        try:
            text = value.dumps(value.obj)
        except Exception as error:
            raise _Unencodable(
                f"a {type(value).__name__} value whose dumps raised {error!r}"
            ) from None
        if not isinstance(text, (str, bytes)):
            raise _Unencodable(
                f"a {type(value).__name__} value whose dumps returned {_type_name(type(text))}"
            )
        out.append(1)
        _encode_value(text, out, depth + 1)

    return encode_json


def _encode_range(value: pg_range.Range[Any], out: _Out, depth: int) -> None:
    out += _BB.pack(_T_RANGE, _RANGE_INDEX[type(value)])
    if value.isempty:
        out.append(0)
        return
    out.append(_BOUND_CODES[value.bounds])
    _encode_value(value.lower, out, depth + 1)
    _encode_value(value.upper, out, depth + 1)


def _encode_multirange(value: multirange.Multirange[Any], out: _Out, depth: int) -> None:
    out += _BB.pack(_T_MULTIRANGE, _MULTIRANGE_INDEX[type(value)])
    out += _I.pack(len(value))
    for item in value:
        if type(item) not in _RANGE_INDEX:
            raise _Unencodable(f"a Multirange holding {_type_name(type(item))}")
        _encode_range(item, out, depth + 1)


def _encode_enum(value: enum.Enum, out: _Out, depth: int) -> None:
    kind = type(value)
    if "<locals>" in kind.__qualname__:
        raise _Unencodable(
            f"an Enum member of {_type_name(kind)}, a class defined in a function, "
            "which decoding could not find; define it at module level"
        )
    out.append(_T_ENUM)
    _encode_str(kind.__module__, out, depth)
    _encode_str(kind.__qualname__, out, depth)
    # By value: also right for a Flag combination, which has no name of its own.
    _encode_value(value.value, out, depth + 1)


def _encode_key(key: Hashable, params: Params, out: _Out) -> None:
    """The key, mostly a reference to its column: prepare() takes it from the params, so
    the same object is found there (a composite key, element by element)."""
    for position, value in enumerate(params):
        if value is key:
            out += _BH.pack(_T_KEY_REF, position)
            return
    if type(key) is tuple:
        out += _BI.pack(_T_TUPLE, len(key))
        for item in key:
            _encode_key_item(item, params, out)
    else:
        _encode_key_item(key, params, out)


def _encode_key_item(item: Any, params: Params, out: _Out) -> None:
    for position, value in enumerate(params):
        if value is item:
            out += _BH.pack(_T_KEY_REF, position)
            return
    if type(item) is NaN:  # the sink's stand-in for a NaN key value (NaN == NaN there)
        out.append(_T_NAN_KEY)
    else:
        _encode_value(item, out, 1)


def _type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return "unprintable"
    return text if len(text) <= 60 else f"{text[:57]}..."


_ENCODERS: dict[type, _Encoder] = {
    type(None): _encode_none,
    bool: _encode_bool,
    int: _encode_int,
    float: _encode_float,
    str: _encode_str,
    bytes: _encode_bytes,
    bytearray: _encode_bytearray,
    memoryview: _encode_memoryview,
    Decimal: _encode_decimal,
    date: _encode_date,
    time: _encode_time,
    datetime: _encode_datetime,
    timedelta: _encode_timedelta,
    uuid.UUID: _encode_uuid,
    list: _encode_sequence(_T_LIST),
    tuple: _encode_sequence(_T_TUPLE),
    dict: _encode_dict,
    Json: _encode_json(_T_JSON),
    Jsonb: _encode_json(_T_JSONB),
}


# --- decoding ---------------------------------------------------------------------------
# Each decoder takes the payload and the position after the tag, returns the value and the
# position after it. Any slip (short data, unknown tag, bad field) raises, and decode() turns
# it into ValueError.

_Decoded = tuple[Any, int]


class _Corrupt(Exception):
    """A payload that passed its CRC but does not follow the format."""


def _take(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    end = pos + size
    if end > len(data) - 4:  # never into the CRC
        raise _Corrupt(f"a field of {size} bytes runs past the end")
    return data[pos:end], end


def _decode_value(data: bytes, pos: int, depth: int) -> _Decoded:
    if depth > MAX_DEPTH:
        raise _Corrupt(f"containers nested deeper than {MAX_DEPTH}")
    return _DECODERS[data[pos]](data, pos + 1, depth)


def _decode_unknown(data: bytes, pos: int, _depth: int) -> _Decoded:
    raise _Corrupt(f"unknown tag {data[pos - 1]} at byte {pos - 1}")


def _decode_none(_data: bytes, pos: int, _depth: int) -> _Decoded:
    return None, pos


def _decode_false(_data: bytes, pos: int, _depth: int) -> _Decoded:
    return False, pos


def _decode_true(_data: bytes, pos: int, _depth: int) -> _Decoded:
    return True, pos


def _decode_int64(data: bytes, pos: int, _depth: int) -> _Decoded:
    return _q.unpack_from(data, pos)[0], pos + 8


def _decode_bigint(data: bytes, pos: int, _depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    raw, pos = _take(data, pos + 4, size)
    return int.from_bytes(raw, "little", signed=True), pos


def _decode_float(data: bytes, pos: int, _depth: int) -> _Decoded:
    return _d.unpack_from(data, pos)[0], pos + 8


def _decode_str8(data: bytes, pos: int, _depth: int) -> _Decoded:
    # The commonest value, so no _take(): a slice running short is caught at the end all
    # the same, as decode() ends past the CRC's start.
    end = pos + 1 + data[pos]
    return data[pos + 1 : end].decode(), end


def _decode_str32(data: bytes, pos: int, _depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    raw, pos = _take(data, pos + 4, size)
    return raw.decode(), pos


def _decode_str_surrogates(data: bytes, pos: int, _depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    raw, pos = _take(data, pos + 4, size)
    return raw.decode("utf-8", "surrogatepass"), pos


def _decode_bytes(data: bytes, pos: int, _depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    return _take(data, pos + 4, size)


def _decode_bytearray(data: bytes, pos: int, _depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    raw, pos = _take(data, pos + 4, size)
    return bytearray(raw), pos


def _decode_memoryview(data: bytes, pos: int, depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    raw, pos = _take(data, pos + 4, size)
    view_format, pos = _decode_str_field(data, pos, depth)
    ndim = data[pos]
    pos += 1
    shape = []
    for _ in range(ndim):
        shape.append(_I.unpack_from(data, pos)[0])
        pos += 4
    view = memoryview(raw)
    if view_format != "B" or ndim != 1:
        view = view.cast(view_format, shape)  # type: ignore[call-overload]
    return view, pos


def _decode_str_field(data: bytes, pos: int, depth: int) -> tuple[str, int]:
    value, pos = _decode_value(data, pos, depth)
    if type(value) is not str:
        raise _Corrupt(f"expected a str, found {_type_name(type(value))}")
    return value, pos


def _decode_decimal(data: bytes, pos: int, _depth: int) -> _Decoded:
    (size,) = _I.unpack_from(data, pos)
    raw, pos = _take(data, pos + 4, size)
    return Decimal(raw.decode("ascii")), pos


def _decode_date(data: bytes, pos: int, _depth: int) -> _Decoded:
    _, year, month, day = _DATE.unpack_from(data, pos - 1)
    return date(year, month, day), pos + 4


def _decode_time(data: bytes, pos: int, depth: int) -> _Decoded:
    _, hour, minute, second, microsecond, fold = _TIME.unpack_from(data, pos - 1)
    pos += _TIME.size - 1
    tz, _offset, pos = _decode_tz(data, pos, depth)
    return time(hour, minute, second, microsecond, tz, fold=fold), pos


def _decode_datetime(data: bytes, pos: int, depth: int) -> _Decoded:
    _, year, month, day, hour, minute, second, micro, fold = _DATETIME.unpack_from(data, pos - 1)
    pos += _DATETIME.size - 1
    if data[pos] == _TZ_UTC:
        utc = datetime(year, month, day, hour, minute, second, micro, timezone.utc, fold=fold)
        return utc, pos + 1
    tz, offset, pos = _decode_tz(data, pos, depth)
    value = datetime(year, month, day, hour, minute, second, micro, tz, fold=fold)
    if offset is not None and value.utcoffset() != offset:
        # The zone's rules changed since it was written: keep the instant that was meant.
        value = value.replace(tzinfo=timezone(offset))
    return value, pos


def _decode_tz(data: bytes, pos: int, depth: int) -> tuple[tzinfo | None, timedelta | None, int]:
    kind = data[pos]
    pos += 1
    if kind == _TZ_NAIVE:
        return None, None, pos
    if kind == _TZ_UTC:
        return timezone.utc, timedelta(0), pos
    if kind == _TZ_FIXED:
        offset, pos = _decode_offset(data, pos)
        if offset is None:
            raise _Corrupt("a fixed time zone without an offset")
        return timezone(offset), offset, pos
    if kind == _TZ_FIXED_NAMED:
        offset, pos = _decode_offset(data, pos)
        name, pos = _decode_str_field(data, pos, depth)
        if offset is None:
            raise _Corrupt("a fixed time zone without an offset")
        return timezone(offset, name), offset, pos
    if kind == _TZ_ZONE:
        key, pos = _decode_str_field(data, pos, depth)
        offset, pos = _decode_offset(data, pos)
        try:
            return ZoneInfo(key), offset, pos
        except Exception:  # not on this machine (or no valid key): the fixed offset
            if offset is None:
                raise _Corrupt(f"time zone {key!r} is not available here") from None
            return timezone(offset), offset, pos
    raise _Corrupt(f"unknown time zone kind {kind}")


def _decode_offset(data: bytes, pos: int) -> tuple[timedelta | None, int]:
    flag = data[pos]
    if flag == 0:
        return None, pos + 1
    if flag != 1:
        raise _Corrupt(f"bad offset flag {flag}")
    (micros,) = _q.unpack_from(data, pos + 1)
    return timedelta(microseconds=micros), pos + 9


def _decode_timedelta(data: bytes, pos: int, _depth: int) -> _Decoded:
    _, days, seconds, microseconds = _TIMEDELTA.unpack_from(data, pos - 1)
    if seconds >= 86400 or microseconds >= 1_000_000:  # a timedelta never has those
        raise _Corrupt("timedelta fields out of range")
    return timedelta(days, seconds, microseconds), pos + _TIMEDELTA.size - 1


def _decode_uuid(data: bytes, pos: int, _depth: int) -> _Decoded:
    raw, pos = _take(data, pos, 16)
    return uuid.UUID(bytes=raw), pos


def _decode_items(data: bytes, pos: int, depth: int) -> tuple[list[Any], int]:
    if depth >= MAX_DEPTH:
        raise _Corrupt(f"containers nested deeper than {MAX_DEPTH}")
    (count,) = _I.unpack_from(data, pos)
    pos += 4
    if count > len(data) - pos:  # each item takes a byte at least: no huge list built
        raise _Corrupt(f"a count of {count} items runs past the end")
    items = []
    decoders = _DECODERS
    depth += 1
    for _ in range(count):
        item, pos = decoders[data[pos]](data, pos + 1, depth)
        items.append(item)
    return items, pos


def _decode_list(data: bytes, pos: int, depth: int) -> _Decoded:
    return _decode_items(data, pos, depth)


def _decode_tuple(data: bytes, pos: int, depth: int) -> _Decoded:
    items, pos = _decode_items(data, pos, depth)
    return tuple(items), pos


def _decode_dict(data: bytes, pos: int, depth: int) -> _Decoded:
    if depth >= MAX_DEPTH:
        raise _Corrupt(f"containers nested deeper than {MAX_DEPTH}")
    (count,) = _I.unpack_from(data, pos)
    pos += 4
    if count > len(data) - pos:
        raise _Corrupt(f"a count of {count} entries runs past the end")
    value = {}
    for _ in range(count):
        item_key, pos = _decode_value(data, pos, depth + 1)
        item, pos = _decode_value(data, pos, depth + 1)
        value[item_key] = item
    return value, pos


def _decode_json(wrapper: type[Json] | type[Jsonb]) -> Callable[[bytes, int, int], _Decoded]:
    def decode_json(data: bytes, pos: int, depth: int) -> _Decoded:
        verbatim = data[pos]
        if verbatim not in (0, 1):
            raise _Corrupt(f"bad json flag {verbatim}")
        obj, pos = _decode_value(data, pos + 1, depth + 1)
        if verbatim:
            return wrapper(obj, dumps=_verbatim), pos
        return wrapper(obj), pos

    return decode_json


def _decode_ip(data: bytes, pos: int, depth: int) -> _Decoded:
    kind = _IPS[data[pos]]
    text, pos = _decode_str_field(data, pos + 1, depth)
    return kind(text), pos


def _decode_range(data: bytes, pos: int, depth: int) -> _Decoded:
    kind = _RANGES[data[pos]]
    bounds = data[pos + 1]
    pos += 2
    if bounds == 0:
        return kind(empty=True), pos
    lower, pos = _decode_value(data, pos, depth + 1)
    upper, pos = _decode_value(data, pos, depth + 1)
    return kind(lower, upper, _BOUNDS[bounds]), pos


def _decode_multirange(data: bytes, pos: int, depth: int) -> _Decoded:
    kind = _MULTIRANGES[data[pos]]
    (count,) = _I.unpack_from(data, pos + 1)
    pos += 5
    if count > len(data) - pos:
        raise _Corrupt(f"a count of {count} ranges runs past the end")
    items = []
    for _ in range(count):
        if data[pos] != _T_RANGE:
            raise _Corrupt("a Multirange item that is not a range")
        item, pos = _decode_range(data, pos + 1, depth + 1)
        items.append(item)
    return kind(items), pos


def _decode_numeric(data: bytes, pos: int, depth: int) -> _Decoded:
    kind = _NUMERICS[data[pos]]
    value, pos = _decode_value(data, pos + 1, depth)
    if type(value) not in (int, float):
        raise _Corrupt(f"a numeric wrapper around {_type_name(type(value))}")
    return kind(value), pos


def _decode_enum(data: bytes, pos: int, depth: int) -> _Decoded:
    module, pos = _decode_str_field(data, pos, depth)
    qualname, pos = _decode_str_field(data, pos, depth)
    value, pos = _decode_value(data, pos, depth + 1)
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise _Corrupt(f"Enum class {module}.{qualname} not found: {error}") from None
    if not (isinstance(found, type) and issubclass(found, enum.Enum)):
        raise _Corrupt(f"{module}.{qualname} is not an Enum class")
    try:
        return found(value), pos
    except ValueError:
        raise _Corrupt(f"{value!r} is no longer a value of {module}.{qualname}") from None


def _decode_key(data: bytes, pos: int, params: Params) -> _Decoded:
    tag = data[pos]
    if tag == _T_TUPLE:
        (count,) = _I.unpack_from(data, pos + 1)
        pos += 5
        if count > len(data) - pos:
            raise _Corrupt(f"a key of {count} columns runs past the end")
        items = []
        for _ in range(count):
            item, pos = _decode_key_item(data, pos, params)
            items.append(item)
        return tuple(items), pos
    return _decode_key_item(data, pos, params)


def _decode_key_item(data: bytes, pos: int, params: Params) -> _Decoded:
    tag = data[pos]
    if tag == _T_KEY_REF:
        (column,) = _H.unpack_from(data, pos + 1)
        return params[column], pos + 3
    if tag == _T_NAN_KEY:
        return NAN_KEY, pos + 1
    return _decode_value(data, pos, 1)


_DECODERS: list[Callable[[bytes, int, int], _Decoded]] = [_decode_unknown] * 256
for _tag, _decoder in {
    _T_NONE: _decode_none,
    _T_FALSE: _decode_false,
    _T_TRUE: _decode_true,
    _T_INT64: _decode_int64,
    _T_BIGINT: _decode_bigint,
    _T_FLOAT: _decode_float,
    _T_STR8: _decode_str8,
    _T_STR32: _decode_str32,
    _T_STR_SURROGATES: _decode_str_surrogates,
    _T_BYTES: _decode_bytes,
    _T_BYTEARRAY: _decode_bytearray,
    _T_MEMORYVIEW: _decode_memoryview,
    _T_DECIMAL: _decode_decimal,
    _T_DATE: _decode_date,
    _T_TIME: _decode_time,
    _T_DATETIME: _decode_datetime,
    _T_TIMEDELTA: _decode_timedelta,
    _T_UUID: _decode_uuid,
    _T_LIST: _decode_list,
    _T_TUPLE: _decode_tuple,
    _T_DICT: _decode_dict,
    _T_JSON: _decode_json(Json),
    _T_JSONB: _decode_json(Jsonb),
    _T_IP: _decode_ip,
    _T_RANGE: _decode_range,
    _T_MULTIRANGE: _decode_multirange,
    _T_NUMERIC: _decode_numeric,
    _T_ENUM: _decode_enum,
}.items():
    _DECODERS[_tag] = _decoder
del _tag, _decoder
