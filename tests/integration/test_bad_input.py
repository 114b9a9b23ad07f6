"""Bad rows and options on a real PostgreSQL: each fails the call that caused it, naming it."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Json, Jsonb

from tests.conftest import create, select
from writebehind import PostgresUpsert, WriteBehindQueue


def queue(dsn: str, table: str, key: str = "id", **sink_options: Any) -> WriteBehindQueue:
    return WriteBehindQueue(PostgresUpsert(dsn, table, key, **sink_options), registry=None)


@pytest.fixture
def docs(db: psycopg.Connection[Any], table_name: str) -> str:
    """A json and a jsonb column, so that both are checked the same way."""
    create(db, table_name, "id int PRIMARY KEY, j json, jb jsonb")
    return table_name


def test_a_str_for_a_json_column_is_json_text(
    dsn: str, db: psycopg.Connection[Any], docs: str
) -> None:
    spaced = '{"b": 2,  "a": [1, "x"]}'
    with queue(dsn, docs) as wb:
        wb.put({"id": 1, "j": spaced, "jb": spaced})
        wb.put({"id": 2, "j": json.dumps("hello"), "jb": json.dumps("hello")})
        wb.put({"id": 3, "j": Json("hello"), "jb": Jsonb("hello")})
        wb.put({"id": 4, "j": "1e999", "jb": " null "})  # JSON Python reads as inf, and null
    assert select(db, docs, "id, j::text, jsonb_typeof(jb), jb") == [
        (1, spaced, "object", {"b": 2, "a": [1, "x"]}),  # json keeps the text as it was
        (2, '"hello"', "string", "hello"),
        (3, '"hello"', "string", "hello"),
        (4, "1e999", "null", None),
    ]


@pytest.mark.parametrize("column", ["j", "jb"])
@pytest.mark.parametrize("text", ["hello", "{'a': 1}", '{"a": 1', ""])
def test_a_str_that_is_not_json_text_fails_at_put(
    dsn: str, docs: str, column: str, text: str
) -> None:
    with queue(dsn, docs) as wb:
        row = {"id": 1, "j": None, "jb": None, column: text}
        with pytest.raises(ValueError, match=f"column '{column}'.*not JSON") as raised:
            wb.put(row)
        assert 'Jsonb("hello")' in str(raised.value)
        assert 'json.dumps("hello")' in str(raised.value)
        assert wb.metrics().total_enqueued == 0


@pytest.mark.parametrize("column", ["j", "jb"])
@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        -math.inf,
        {"a": [1, {"b": math.inf}]},
        [1.5, math.nan],
        '{"a": NaN}',
        "[1, Infinity]",
        "-Infinity",
    ],
    ids=repr,
)
def test_nan_and_infinity_in_a_json_value_fail_at_put(
    dsn: str, db: psycopg.Connection[Any], docs: str, column: str, value: Any
) -> None:
    with queue(dsn, docs) as wb:
        with pytest.raises(ValueError, match=f"column '{column}'.*NaN and Infinity are not JSON"):
            wb.put({"id": 1, "j": None, "jb": None, column: value})
        wb.put({"id": 2, "j": None, "jb": None, column: [1.5, 2]})  # finite floats are fine
        assert wb.metrics().total_enqueued == 1
    assert select(db, docs, "id") == [(2,)]


def test_a_value_json_cannot_serialize_is_a_type_error(dsn: str, docs: str) -> None:
    with queue(dsn, docs) as wb:
        with pytest.raises(TypeError, match="column 'jb'.*not JSON"):
            wb.put({"id": 1, "j": None, "jb": {"when": object()}})
        assert wb.metrics().total_enqueued == 0


@pytest.mark.parametrize(
    ("value", "error"),
    [("5", TypeError), (True, TypeError), (None, TypeError), (-1, ValueError), (0, ValueError),
     (math.nan, ValueError), (math.inf, ValueError)],
)  # fmt: skip
def test_connect_timeout_is_checked_when_the_sink_is_built(
    value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="connect_timeout"):
        PostgresUpsert("host=/nonexistent", "t", "id", connect_timeout=value)


def test_a_good_connect_timeout_bounds_the_wait_for_a_connection(
    dsn: str, db: psycopg.Connection[Any], table_name: str
) -> None:
    create(db, table_name, "id int PRIMARY KEY")
    with queue(dsn, table_name, connect_timeout=2) as wb:
        wb.put({"id": 1})
    assert select(db, table_name) == [(1,)]
