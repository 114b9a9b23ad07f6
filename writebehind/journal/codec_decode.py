"""Bytes to values: each decoder reads the fields after one tag and makes a new object of the
type that was encoded."""

from __future__ import annotations

import enum
import importlib
import uuid
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from psycopg.types.json import Json, Jsonb

from .codec_format import (
    _BOUNDS,
    _DATE,
    _DATETIME,
    _I,
    _IPS,
    _MULTIRANGES,
    _NUMERICS,
    _RANGES,
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
    _Corrupt,
    _d,
    _q,
    _type_name,
    _verbatim,
)

# Each decoder takes the payload and the position after the tag, returns the value and the
# position after it. Any slip (short data, unknown tag, bad field) raises, and decode() turns
# it into ValueError.

_Decoded = tuple[Any, int]


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
