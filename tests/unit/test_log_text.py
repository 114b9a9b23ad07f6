"""The text of the queue's log lines: an error's first line, without the row value PostgreSQL
quotes at its end."""

from __future__ import annotations

import psycopg.errors

from writebehind.queue.log_text import describe


def test_a_value_the_server_quotes_is_left_out() -> None:
    for error in (
        psycopg.errors.InvalidTextRepresentation(
            'invalid input syntax for type integer: "SECRET-77"'
        ),
        psycopg.errors.InvalidTextRepresentation('invalid input value for enum mood: "SECRET"'),
        psycopg.errors.InvalidDatetimeFormat('invalid input syntax for type date: "a ""q"" b"'),
    ):
        text = describe(error)
        assert "SECRET" not in text and '"q"' not in text, text
        assert text.endswith(": (the value is not shown)")
        assert f"[{error.sqlstate}]" in text


def test_names_the_server_quotes_stay() -> None:
    error = psycopg.errors.CheckViolation(
        'new row for relation "readings" violates check constraint "readings_n_check"'
    )
    assert describe(error) == (
        'CheckViolation [23514] new row for relation "readings" violates check constraint '
        '"readings_n_check"'
    )
