"""Key values PostgreSQL holds equal are one key in Python too: the sink's key canonicalization."""

from __future__ import annotations

import uuid
from decimal import Decimal

from writebehind import PostgresUpsert
from writebehind._keys import KEY_CANONICAL
from writebehind.postgres.catalog import Column, TableInfo


def sink_for(key_type: str, *, not_null: bool = True) -> PostgresUpsert:
    """A sink configured from a catalog description, as open() would configure it."""
    columns = (Column("k", key_type, False, False, not_null), Column("v", "integer", False, False))
    info = TableInfo("public", "t", columns, (frozenset({"k"}),))
    sink = PostgresUpsert("host=/nonexistent", "t", "k")
    sink._configure_from(info)
    return sink


def key(sink: PostgresUpsert, value: object) -> object:
    return sink.prepare({"k": value, "v": 1})[0]


def test_citext_keys_differing_in_case_are_one_key() -> None:
    sink = sink_for("citext")
    assert key(sink, "Bob") == key(sink, "BOB") == key(sink, "bob")
    assert sink.prepare({"k": "Bob", "v": 1})[1] == ("Bob", 1)  # the value written is as put
    schema_qualified = sink_for("public.citext")
    assert key(schema_qualified, "Bob") == key(schema_qualified, "bOB")


def test_a_uuid_as_text_in_either_case_or_as_a_uuid_is_one_key() -> None:
    sink = sink_for("uuid")
    value = uuid.uuid4()
    assert key(sink, str(value).upper()) == key(sink, str(value)) == key(sink, value)
    assert key(sink, "not a uuid") == "not a uuid"  # left to the database to refuse


def test_nan_is_one_key_in_numeric_and_float_columns() -> None:
    for type_name in ("numeric", "double precision", "real"):
        sink = sink_for(type_name)
        assert key(sink, Decimal("NaN")) == key(sink, float("nan"))
        assert key(sink, Decimal("1.5")) == Decimal("1.5")


def test_other_types_keep_their_keys_untouched() -> None:
    sink = sink_for("text")
    assert key(sink, "Bob") != key(sink, "bob")


def test_a_signaling_nan_key_is_a_nan_key_not_an_arithmetic_error() -> None:
    sink = sink_for("numeric")
    assert key(sink, Decimal("sNaN")) == key(sink, Decimal("NaN"))


def test_key_values_of_integer_text_and_char_columns_compare_as_the_server_reads_them() -> None:
    integer, text, char = (KEY_CANONICAL[name] for name in ("integer", "text", "character"))
    assert [integer(v) for v in ("7", " -7 ", "0x10", "1_000", 7)] == [7, -7, 16, 1000, 7]
    assert integer("seven") == "seven"  # the server decides
    assert (text(7), text("7"), text(7.5)) == ("7", "7", 7.5)
    assert (char("ab  "), char(7)) == ("ab", "7")
