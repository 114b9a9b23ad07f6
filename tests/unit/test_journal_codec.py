"""The journal's payload codec: every value a converted row holds comes back exactly (type and
value), a value it cannot hold is refused at encoding, and a damaged payload is an error."""

from __future__ import annotations

import enum
import ipaddress
import math
import random
import re
import struct
import sys
import uuid
import zlib
from collections.abc import Callable, Hashable
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from psycopg.types import multirange, numeric
from psycopg.types import range as pg_range
from psycopg.types.json import Json, Jsonb

from writebehind import PostgresUpsert
from writebehind._keys import NAN_KEY as _NAN_KEY
from writebehind.journal import codec_decode
from writebehind.journal import codec_format as tags
from writebehind.journal.codec import FORMAT_VERSION, MAX_DEPTH, decode, encode
from writebehind.postgres.catalog import Column, TableInfo
from writebehind.tools.bench.workload import COLUMNS, make_rows


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Point(NamedTuple):
    x: int
    y: int


class Markup(str):
    pass


class OtherTz(tzinfo):
    """A tzinfo of neither ZoneInfo nor timezone (as pytz's or dateutil's)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=5, minutes=30)

    def tzname(self, dt: datetime | None) -> str:
        return "X"

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


class NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> None:
        return None

    def tzname(self, dt: datetime | None) -> None:
        return None

    def dst(self, dt: datetime | None) -> None:
        return None


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down; NaNs of the same bits are the same."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())  # sNaN == sNaN raises; the digits and exponent
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (Json, Jsonb)):
        return same(a.obj, b.obj) and a.dumps is b.dumps
    if isinstance(a, memoryview):
        return (a.format, a.shape, a.tobytes()) == (b.format, b.shape, b.tobytes())
    if isinstance(a, (datetime, time)):
        return a == b and a.fold == b.fold and same_tz(a.tzinfo, b.tzinfo)
    if isinstance(a, pg_range.Range):
        return (
            a.isempty == b.isempty
            and a.bounds == b.bounds
            and same(a.lower, b.lower)
            and same(a.upper, b.upper)
        )
    if isinstance(a, multirange.Multirange):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, enum.Enum):
        return a is b
    return bool(a == b)


def same_tz(a: tzinfo | None, b: tzinfo | None) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, ZoneInfo):
        return a is b  # ZoneInfo(key) is one object per key
    if isinstance(a, timezone):
        assert isinstance(b, timezone)
        return a == b and a.tzname(None) == b.tzname(None)
    return a is b


def round_trip(params: tuple[Any, ...], key: Hashable = None) -> tuple[Hashable, tuple[Any, ...]]:
    payload = encode(key, params)
    assert payload[0] == FORMAT_VERSION
    decoded_key, decoded = decode(payload)
    assert same(decoded, params), (params, decoded)
    return decoded_key, decoded


# --- random values ----------------------------------------------------------------------

ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe")


def random_text(rng: random.Random) -> str:
    alphabet = "az Z09é€😀\x00\n'\"\\"
    size = rng.choice((0, 1, 5, 40, 300))
    text = "".join(rng.choice(alphabet) for _ in range(size))
    if rng.random() < 0.1:
        text += chr(rng.randrange(0xD800, 0xE000))  # a lone surrogate
    return text


def random_float(rng: random.Random) -> float:
    special = (0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 5e-324, sys.float_info.max)
    if rng.random() < 0.3:
        return rng.choice(special)
    if rng.random() < 0.1:  # any bit pattern: NaNs with payloads too
        return float(struct.unpack("<d", rng.randbytes(8))[0])
    return rng.uniform(-1e12, 1e12)


def random_int(rng: random.Random) -> int:
    bits = rng.choice((1, 7, 31, 62, 63, 64, 65, 200, 5000))
    value = rng.getrandbits(bits)
    return -value if rng.random() < 0.5 else value


def random_decimal(rng: random.Random) -> Decimal:
    special = ("NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "-0", "0E-30", "1.20E+5")
    if rng.random() < 0.3:
        return Decimal(rng.choice(special))
    digits = str(rng.getrandbits(rng.choice((3, 50, 300))))
    return Decimal(f"{rng.choice('+-')}{digits}E{rng.randrange(-400, 400)}")


def random_tz(rng: random.Random) -> tzinfo | None:
    choice = rng.randrange(5)
    if choice == 0:
        return None
    if choice == 1:
        return timezone.utc
    offset = timedelta(minutes=rng.randrange(-23 * 60, 23 * 60), microseconds=rng.choice((0, 7)))
    if choice == 2:
        return timezone(offset)
    if choice == 3:
        return timezone(offset, "Named")
    return ZoneInfo(rng.choice(ZONES))


def random_datetime(rng: random.Random) -> datetime:
    moment = datetime(1, 1, 1) + timedelta(
        seconds=rng.randrange(0, 315_537_897_599), microseconds=rng.randrange(10**6)
    )
    if rng.random() < 0.2:
        moment = datetime(rng.choice((1, 9999)), 12, 31, 23, 59, 59, 999999)
    tz = random_tz(rng)
    value = moment.replace(tzinfo=tz, fold=rng.randrange(2))
    if tz is not None:
        try:
            value.utcoffset()
            value.isoformat()
        except OverflowError:
            return moment
    return value


def random_time(rng: random.Random) -> time:
    tz = random_tz(rng)
    if isinstance(tz, ZoneInfo):
        tz = None  # a time with a zone has no offset: PostgreSQL could not take it
    return time(
        rng.randrange(24),
        rng.randrange(60),
        rng.randrange(60),
        rng.randrange(10**6),
        tz,
        fold=rng.randrange(2),
    )


def random_range(rng: random.Random) -> pg_range.Range[Any]:
    bounds = rng.choice(("[)", "(]", "()", "[]"))
    lower = rng.choice((None, rng.randrange(-100, 0)))
    upper = rng.choice((None, rng.randrange(0, 100)))
    choice = rng.randrange(4)
    if choice == 0:
        return pg_range.Int4Range(empty=True)
    if choice == 1:
        return pg_range.Int4Range(lower, upper, bounds)
    if choice == 2:
        return pg_range.Range(lower, upper, bounds)
    return pg_range.NumericRange(
        None if lower is None else Decimal(lower) / 8,
        None if upper is None else Decimal(upper) / 8,
        bounds,
    )


def random_scalar(rng: random.Random) -> Any:
    makers: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: random_int(rng),
        lambda: random_float(rng),
        lambda: random_text(rng),
        lambda: rng.randbytes(rng.choice((0, 3, 300))),
        lambda: bytearray(rng.randbytes(5)),
        lambda: memoryview(rng.randbytes(8)),
        lambda: memoryview(rng.randbytes(8)).cast("i", (2,)),
        lambda: memoryview(rng.randbytes(24)).cast("d", (3,)),
        lambda: random_decimal(rng),
        lambda: date.fromordinal(rng.randrange(1, date.max.toordinal() + 1)),
        lambda: random_time(rng),
        lambda: random_datetime(rng),
        lambda: timedelta(
            days=rng.randrange(-999_999_999, 1_000_000_000),
            seconds=rng.randrange(86400),
            microseconds=rng.randrange(10**6),
        ),
        lambda: uuid.UUID(int=rng.getrandbits(128)),
        lambda: ipaddress.ip_address(rng.getrandbits(rng.choice((32, 128)))),
        lambda: ipaddress.ip_network(f"10.{rng.randrange(256)}.0.0/16"),
        lambda: ipaddress.IPv6Network("2001:db8::/32"),
        lambda: ipaddress.ip_interface("192.168.1.7/24"),
        lambda: ipaddress.IPv6Interface("fe80::1/64"),
        lambda: ipaddress.IPv6Address("fe80::1%eth0"),
        lambda: random_range(rng),
        lambda: multirange.Int4Multirange([pg_range.Int4Range(1, 3), pg_range.Int4Range(5, 9)]),
        lambda: numeric.Int2(rng.randrange(-(2**15), 2**15)),
        lambda: numeric.Int4(rng.randrange(-(2**31), 2**31)),
        lambda: numeric.Int8(random_int(rng)),
        lambda: numeric.Oid(rng.randrange(2**32)),
        lambda: numeric.Float4(random_float(rng)),
        lambda: numeric.Float8(random_float(rng)),
        lambda: rng.choice(list(Color)),
        lambda: rng.choice(list(Level)),
        lambda: Perm(rng.randrange(8)),  # combinations too
    ]
    return rng.choice(makers)()


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return random_int(rng)
    if choice == 3:
        return rng.uniform(-1, 1)
    if choice == 4:
        return random_text(rng)
    if choice in (5, 6):
        return {random_text(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.random()
    if depth < 3 and choice < 0.08:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]  # arrays
    if depth < 3 and choice < 0.14:
        return tuple(random_value(rng, depth + 1) for _ in range(rng.randrange(5)))  # composites
    if choice < 0.2:
        wrapper = rng.choice((Json, Jsonb))
        return wrapper(random_json(rng))
    return random_scalar(rng)


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_random_rows_come_back_exactly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        params = tuple(random_value(rng) for _ in range(rng.randrange(0, 12)))
        round_trip(params)


EDGE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    10**400,
    -(10**400),
    0.0,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x" * 255,
    "x" * 256,
    "é" * 200,
    "\ud800",
    "a\udfffb",
    b"",
    bytearray(b"\x00\xff"),
    memoryview(b"abc"),
    memoryview(bytes(range(12))).cast("B", (3, 4)),
    Decimal("NaN"),
    Decimal("-sNaN123"),
    Decimal("1.000"),
    Decimal("1E+3"),
    Decimal("-0E-7"),
    Decimal("Infinity"),
    date.min,
    date.max,
    time.min,
    time.max,
    time(12, 0, tzinfo=timezone(timedelta(hours=-3), "BRT")),
    time(12, 0, tzinfo=ZoneInfo("Europe/Paris")),
    datetime.min,
    datetime.max,
    datetime(2024, 1, 1, tzinfo=timezone.utc),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(0), "UTC")),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=5, microseconds=1))),
    datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=0),
    datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
    timedelta.min,
    timedelta.max,
    timedelta(microseconds=-1),
    uuid.UUID(int=0),
    uuid.UUID(int=2**128 - 1),
    [],
    [[1, 2], [3, None]],
    (),
    ((1, "a"), (None,)),
    {"a": 1, 2: [3]},
    Json({"a": [1, 2.5, None, True]}),
    Jsonb([]),
    Jsonb(None),
    Json('"text"'),
    pg_range.Range(empty=True),
    pg_range.Range(None, None),
    pg_range.DateRange(date(2024, 1, 1), date(2024, 2, 1), "[]"),
    pg_range.TimestamptzRange(datetime(2024, 1, 1, tzinfo=timezone.utc), None),
    pg_range.NumericRange(Decimal("1.5"), Decimal("NaN")),
    multirange.Multirange(),
    multirange.DateMultirange([pg_range.DateRange(date(2024, 1, 1), date(2024, 1, 2))]),
    ipaddress.IPv4Address("0.0.0.0"),
    ipaddress.IPv6Address("::ffff:1.2.3.4"),
    Color.RED,
    Level.HIGH,
    Perm.R | Perm.W,
    Perm(0),
    numeric.IntNumeric(10**30),
    numeric.Float4(-0.0),
]


def address_free_repr(value: Any) -> str:
    """A test id without memory addresses: the same in every process (pytest-xdist's workers
    must collect the same ids)."""
    return re.sub(r" (?:object )?at 0x[0-9a-fA-F]+", "", repr(value))


@pytest.mark.parametrize("value", EDGE_VALUES, ids=address_free_repr)
def test_edge_values_come_back_exactly(value: Any) -> None:
    round_trip((value,))
    round_trip(([value, value], (value,)))  # inside an array and a composite


def test_a_zone_that_is_not_installed_keeps_the_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    value = datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    payload = encode(None, (value,))

    def missing(key: str) -> ZoneInfo:
        raise KeyError(key)  # as ZoneInfoNotFoundError is

    monkeypatch.setattr(codec_decode, "ZoneInfo", missing)
    (back,) = decode(payload)[1]
    assert back == value and back.utcoffset() == timedelta(hours=2)
    assert back.tzinfo == timezone(timedelta(hours=2))


def test_a_zone_whose_rules_changed_keeps_the_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    value = datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    payload = encode(None, (value,))
    monkeypatch.setattr(codec_decode, "ZoneInfo", lambda key: ZoneInfo("Asia/Tokyo"))
    (back,) = decode(payload)[1]
    assert back == value and back.utcoffset() == timedelta(hours=2)


def test_another_tzinfo_class_is_kept_as_its_offset() -> None:
    value = datetime(2024, 7, 1, 12, tzinfo=OtherTz())
    (back,) = decode(encode(None, (value,)))[1]
    assert back == value and back.isoformat() == value.isoformat()
    assert back.tzinfo == timezone(timedelta(hours=5, minutes=30))


def test_json_with_a_dumps_of_its_own_keeps_the_text_it_makes() -> None:
    value = Jsonb({"b": 1, "a": 2}, dumps=lambda obj: "custom:" + repr(sorted(obj)))
    (back,) = decode(encode(None, (value,)))[1]
    assert type(back) is Jsonb and back.dumps is not None
    assert back.dumps(back.obj) == "custom:['a', 'b']"  # what psycopg will send
    again = decode(encode(None, (back,)))[1][0]  # and stable across a second journaling
    assert again.obj == back.obj and again.dumps is back.dumps


def test_a_bench_row_through_prepare_comes_back_exactly() -> None:
    """The row the benchmark writes, converted by the sink as put() converts it."""
    types = ["bigint", "text", "text", "text", "integer", "double precision", "boolean"]
    types += ["timestamp with time zone", "jsonb"]
    columns = tuple(
        Column(name, kind, False, False, name == "id")
        for name, kind in zip(COLUMNS, types, strict=True)
    )
    sink = PostgresUpsert("host=/nonexistent", "bench", "id")
    sink._configure_from(TableInfo("public", "bench", columns, (frozenset({"id"}),)))
    for row in make_rows(50, seed=3, prefix="u", updated=datetime.now(timezone.utc)):
        key, params = sink.prepare(row)
        assert isinstance(params[-1], str)  # json arrives as JSON text
        decoded_key, decoded = round_trip(params, key)
        assert decoded_key == key and decoded_key is decoded[0]


# --- keys -------------------------------------------------------------------------------


def test_a_key_taken_from_the_params_is_stored_as_a_reference() -> None:
    name = "a fairly long key value " * 4
    params = (name, 1)
    by_reference = encode(name, params)
    by_value = encode(name + "", (name[:-1] + name[-1], 1))  # an equal, distinct object
    assert len(by_reference) < len(by_value)
    key, decoded = decode(by_reference)
    assert key == name and key is decoded[0]


def test_composite_fixed_and_nan_keys_come_back() -> None:
    user = uuid.uuid4()
    params = (str(user), "Bob", math.nan, 3)
    cases: list[Hashable] = [
        (params[1], params[3]),  # composite: references
        user,  # fixed by the sink (uuid text -> UUID): stored by value
        ("bob", params[3]),  # citext lowered: one part by value
        _NAN_KEY,
        (_NAN_KEY, params[3]),
        None,
        12345,  # append-only sinks number rows
    ]
    for key in cases:
        decoded_key, _ = round_trip(params, key)
        assert decoded_key == key and type(decoded_key) is type(key)
    assert decode(encode(_NAN_KEY, params))[0] is _NAN_KEY


# --- refused values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        (Markup("<b>"), "Markup"),
        (Point(1, 2), "Point"),
        ({1, 2}, "set"),
        ([1, [2, complex(1, 2)]], "complex"),
        (Json({"a": object()}), "object"),
        (pg_range.Range(1, object()), "object"),
        (datetime(2024, 1, 1, tzinfo=type("Raises", (tzinfo,), {})()), "Raises"),
        (datetime(2024, 1, 1, tzinfo=NoOffset()), "NoOffset"),
    ],
    ids=address_free_repr,
)
def test_a_value_of_an_unknown_type_is_refused_naming_type_and_column(
    value: Any, type_name: str
) -> None:
    with pytest.raises(TypeError, match=rf"^column 2: .*\b{type_name}\b.*cannot be journaled"):
        encode(1, (1, "ok", value))


def test_an_enum_of_a_local_class_is_refused() -> None:
    class Local(enum.Enum):
        A = 1

    with pytest.raises(TypeError, match=r"column 0: .*Local.*defined in a function"):
        encode(None, (Local.A,))


def test_an_unencodable_key_is_refused_as_the_key() -> None:
    with pytest.raises(TypeError, match=r"^the key: .*object"):
        encode(object(), (1,))


def test_a_json_whose_dumps_fails_is_refused() -> None:
    def broken(obj: Any) -> str:
        raise RuntimeError("no")

    with pytest.raises(TypeError, match=r"column 0: .*dumps raised"):
        encode(None, (Json(1, dumps=broken),))


def test_params_must_be_a_tuple() -> None:
    with pytest.raises(TypeError, match="params must be a tuple"):
        encode(None, [1, 2])  # type: ignore[arg-type]


def test_nesting_is_bounded_on_both_sides() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    round_trip((deep,))
    with pytest.raises(ValueError, match=r"column 0: .*nested deeper"):
        encode(None, ([deep],))
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"column 0: .*nested deeper"):
        encode(None, (loop,))
    # A payload claiming deeper nesting than encode writes is refused, not a RecursionError.
    body = bytes([FORMAT_VERSION, 1, 0]) + bytes([tags._T_LIST, 1, 0, 0, 0]) * 5000
    with pytest.raises(ValueError, match="nested deeper"):
        decode(seal(body + bytes([tags._T_NONE, tags._T_NONE])))


# --- damaged payloads -------------------------------------------------------------------


def seal(body: bytes) -> bytes:
    """A payload with a valid CRC: to reach the checks behind it."""
    return body + struct.pack("<I", zlib.crc32(body))


def sample_payload() -> bytes:
    rng = random.Random(7)
    params = tuple(random_value(rng) for _ in range(12)) + (
        "name",
        datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris")),
        Color.GREEN,
    )
    return encode(params[-3], params)


def test_every_truncation_is_refused() -> None:
    payload = sample_payload()
    for size in range(len(payload)):
        with pytest.raises(ValueError, match="journal payload"):
            decode(payload[:size])


def test_every_flipped_bit_is_refused() -> None:
    payload = sample_payload()
    for at in range(len(payload)):
        for bit in range(8):
            damaged = bytearray(payload)
            damaged[at] ^= 1 << bit
            with pytest.raises(ValueError, match="journal payload"):
                decode(damaged)


def test_appended_bytes_are_refused() -> None:
    payload = sample_payload()
    with pytest.raises(ValueError, match="journal payload"):
        decode(payload + b"\x00")
    with pytest.raises(ValueError, match="bytes after the key"):
        decode(seal(payload[:-4] + b"\x00"))


def test_a_damaged_structure_behind_a_valid_crc_is_a_value_error_never_a_crash() -> None:
    """With the CRC recomputed, any mutation either still decodes or raises ValueError."""
    body = sample_payload()[:-4]
    rng = random.Random(11)
    refused = 0
    for _ in range(3000):
        damaged = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(1, len(damaged))] = rng.randrange(256)
        if rng.random() < 0.3:
            damaged = damaged[: rng.randrange(1, len(damaged))]
        try:
            decode(seal(bytes(damaged)))
        except ValueError as error:
            assert str(error).startswith("journal payload")
            refused += 1
    assert refused > 1000  # most mutations break the structure, and are seen to


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (bytes([FORMAT_VERSION, 1, 0, 0xEE, tags._T_NONE]), "unknown tag 238"),
        (bytes([FORMAT_VERSION, 1, 0, tags._T_STR8, 9, 0x41, tags._T_NONE]), "not valid"),
        (bytes([FORMAT_VERSION, 1, 0, tags._T_STR32, 9, 0, 0, 0, 0x41]), "runs past"),
        (bytes([FORMAT_VERSION, 1, 0, tags._T_STR8, 1, 0xFF, tags._T_NONE]), "utf-8"),
        (bytes([FORMAT_VERSION, 1, 0, tags._T_LIST, 0xFF, 0xFF, 0xFF, 0x7F]), "items runs"),
        (bytes([FORMAT_VERSION, 2, 0, tags._T_NONE, tags._T_NONE]), "runs past|tag"),
        (bytes([FORMAT_VERSION, 1, 0, tags._T_NONE, tags._T_KEY_REF, 5, 0]), "IndexError"),
    ],
)
def test_a_malformed_payload_says_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode(seal(body))


def test_the_version_byte_is_checked() -> None:
    payload = encode(1, (1, "a"))
    other = seal(bytes([FORMAT_VERSION + 1]) + payload[1:-4])
    with pytest.raises(ValueError, match=rf"format version {FORMAT_VERSION + 1}.*reads version"):
        decode(other)
    with pytest.raises(ValueError, match="empty"):
        decode(b"")


def test_an_enum_value_gone_from_its_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = encode(None, (Color.RED,))
    body = payload[:-4].replace(b"\x03red", b"\x03tan")  # the value as an older class had it
    with pytest.raises(ValueError, match="no longer a value of"):
        decode(seal(body))
    monkeypatch.setattr(sys.modules[__name__], "Color", 42)
    with pytest.raises(ValueError, match="is not an Enum class"):
        decode(payload)


def test_decode_takes_any_bytes_like_payload() -> None:
    payload = encode(1, (1, "a"))
    for form in (payload, bytearray(payload), memoryview(payload)):
        assert decode(form) == (1, (1, "a"))
