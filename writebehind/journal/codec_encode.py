"""Values to bytes: one tag, then what the tag says, appended to the payload being built.

Exact types are looked up in a table (the common case, on ``put()``'s path); Enum members,
ranges, numeric wrappers and IP addresses are found by their class after that; any other
type, subclasses included, is refused."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types import multirange
from psycopg.types import range as pg_range
from psycopg.types.json import Json, Jsonb

from .codec_format import (
    _B,
    _BB,
    _BI,
    _BOUND_CODES,
    _DATE,
    _DATETIME,
    _I,
    _INT64_MAX,
    _INT64_MIN,
    _IP_INDEX,
    _MULTIRANGE_INDEX,
    _NUMERIC_INDEX,
    _RANGE_INDEX,
    _T_BIGINT,
    _T_BYTEARRAY,
    _T_BYTES,
    _T_DATE,
    _T_DATETIME,
    _T_DECIMAL,
    _T_DICT,
    _T_ENUM,
    _T_FALSE,
    _T_FLOAT,
    _T_INT64,
    _T_IP,
    _T_JSON,
    _T_JSONB,
    _T_LIST,
    _T_MEMORYVIEW,
    _T_MULTIRANGE,
    _T_NONE,
    _T_NUMERIC,
    _T_RANGE,
    _T_STR8,
    _T_STR32,
    _T_STR_SURROGATES,
    _T_TIME,
    _T_TIMEDELTA,
    _T_TRUE,
    _T_TUPLE,
    _T_UUID,
    _TIME,
    _TIMEDELTA,
    _TZ_FIXED,
    _TZ_FIXED_NAMED,
    _TZ_NAIVE,
    _TZ_UTC,
    _TZ_ZONE,
    MAX_DEPTH,
    _Bd,
    _Bq,
    _q,
    _type_name,
    _Unencodable,
    _verbatim,
)

_Out = bytearray
_Encoder = Callable[[Any, _Out, int], None]


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
            f"a value of type {_type_name(kind)} cannot be journaled; convert it to a plain "
            "type first"
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
