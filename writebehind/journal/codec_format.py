"""The codec's vocabulary, shared by encoding and decoding: the tag of each kind of value,
the classes known by their position in a list, the packed layouts of fixed-size fields,
the errors each direction raises and the helpers both use. Numbers and positions here are part
of the format: never renumber or reorder, only add."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from typing import Any

from psycopg.types import multirange, numeric
from psycopg.types import range as pg_range

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


class _Unencodable(TypeError):
    """A value of a type the format has no tag for (the caller adds where it was)."""


class _Corrupt(Exception):
    """A payload that passed its CRC but does not follow the format."""


def _type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _verbatim(text: Any) -> Any:
    """The ``dumps`` of a Json read back whose text was made at encoding: it is sent as is."""
    return text
