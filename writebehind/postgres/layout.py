"""One set of written columns of a table, and what writing rows of them needs: a row checked
and converted into parameters, its key as PostgreSQL compares it, which row of a key a batch
keeps, and the statements.

A sink has the layout of the columns it writes. A journal replayed after a migration or a
redeploy may hold rows of other columns: they get a layout of their own (``journaled``), checked
against the table as it is now, so that each value goes to the column it was put for.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from operator import itemgetter
from typing import Any

from psycopg import sql
from psycopg.types.json import Json, Jsonb

from .._keys import KEY_CANONICAL, text_key
from .._sink import Deletion, Merger, Params, Replaces, RowLayout
from ..errors import SchemaError
from .catalog import Column, TableInfo, WrittenColumns, check_key, written_columns
from .merging import ADDABLE, RowMerger, keep_first
from .methods import Writer, writer_for
from .progress import ProgressTable
from .statements import ConflictRule, delete_statement, insert_statement

__all__ = ["Layout", "Rules", "journaled", "of_sink"]

_JSON_TYPES = frozenset({"json", "jsonb"})
# Compact separators: less to build and to send than json.dumps' default. NaN and Infinity
# are not JSON: PostgreSQL would refuse them at write time, so they fail their put instead.
_to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_TZ_TYPES = frozenset({"timestamp with time zone"})
_TEXT_TYPES = frozenset({"text", "character varying", "character"})


@dataclass(frozen=True)
class Rules:
    """A sink's options that decide how its rows are written (checked when it was built)."""

    table: str
    """The table as the sink was given it, to name it in messages."""
    key: tuple[str, ...]
    columns: tuple[str, ...] | None
    on_conflict: str
    update_columns: tuple[str, ...] | None
    version_column: str | None
    merge: tuple[tuple[str, str], ...]
    method: str
    naive_timezone: tzinfo | None


def of_sink(info: TableInfo, rules: Rules, progress: ProgressTable | None) -> Layout:
    """The layout of the columns a sink writes: its key and ``columns`` checked against the
    table (SchemaError for what it cannot write)."""
    if rules.key:
        check_key(info, rules.key)
    columns = written_columns(info, rules.key, rules.columns)
    names = [column.name for column in columns]
    merge = dict(rules.merge)
    for name in (*(rules.update_columns or ()), *merge, *filter(None, [rules.version_column])):
        if name not in names:
            raise SchemaError(
                f"column {name!r} is not written to {info.qualified_name} (writes {names}), "
                "so an update cannot set it"
            )
    for column in columns:
        if merge.get(column.name) == "add" and column.type_name not in ADDABLE:
            raise SchemaError(
                f"merge {{{column.name!r}: 'add'}}: column {column.name!r} of "
                f"{info.qualified_name} is {column.type_name}, not a number"
            )
    return Layout(info, columns, rules, progress, rules.update_columns, merge)


def journaled(
    info: TableInfo, rules: Rules, progress: ProgressTable | None, columns: Sequence[str]
) -> Layout:
    """The layout that rows journaled with ``columns`` are written with now: each value to the
    column of its name, the sink's conflict rules kept for those columns. SchemaError naming
    the column when such rows cannot be written: a column the table no longer has (or that
    is now generated), or a NOT NULL column without a default, or a key or version column,
    that the rows have no value for."""
    table = info.qualified_name
    for name in columns:
        column = info.column(name)
        if column is None:
            raise SchemaError(
                f"column {name!r} of the journaled rows is not a column of {table} (any more): "
                "its values cannot be written"
            )
        if column.generated:
            raise SchemaError(
                f"column {name!r} of the journaled rows is generated in {table}: it cannot be "
                "written"
            )
    given = set(columns)
    for name in (*rules.key, *filter(None, [rules.version_column])):
        if name not in given:
            raise SchemaError(
                f"column {name!r} ({'key' if name in rules.key else 'version_column'}) is not "
                f"in the journaled rows, which have {list(columns)}"
            )
    for column in info.columns:
        if column.not_null and not column.has_default and column.name not in given:
            raise SchemaError(
                f"column {column.name!r} of {table} is NOT NULL without a default, and the "
                f"journaled rows have no value for it (they have {list(columns)})"
            )
    if rules.key:
        check_key(info, rules.key)
    written = written_columns(info, rules.key, [name for name in columns if name not in rules.key])
    updated = (
        None
        if rules.update_columns is None
        else tuple(name for name in rules.update_columns if name in given)
    )
    merge = {name: how for name, how in rules.merge if name in given}
    return Layout(info, written, rules, progress, updated, merge)


class Layout:
    """Written columns (``names``, in table order) of ``info``'s table, by ``rules``."""

    def __init__(
        self,
        info: TableInfo,
        columns: WrittenColumns,
        rules: Rules,
        progress: ProgressTable | None,
        update_columns: tuple[str, ...] | None,
        merge: Mapping[str, str],
    ) -> None:
        self.rules = rules
        key = rules.key
        self.names = tuple(column.name for column in columns)
        self.name_set = frozenset(self.names)
        self.row_layout = RowLayout(
            info.qualified_name,
            self.names,
            tuple(column.type_name for column in columns),
            key,
        )
        """The layout as plain data: what a journal record of these rows says of itself."""
        getter = itemgetter(*self.names)
        self._params_of: Callable[[Mapping[str, Any]], Params] = (
            (lambda row: (getter(row),)) if len(self.names) == 1 else getter
        )
        positions = {name: index for index, name in enumerate(self.names)}
        key_positions = [positions[name] for name in key]
        if not key_positions:
            numbers = itertools.count()
            self._key_of: Callable[[Params], Hashable] = lambda _params: next(numbers)
        elif len(key_positions) == 1:
            self._key_of = itemgetter(key_positions[0])
        else:
            self._key_of = itemgetter(*key_positions)
        self._composite = len(key) > 1
        self._key_fixes, self._null_key_error = _key_rules(info, columns, key)
        self.replaces = _replace_rule(rules, positions)
        """Which row of a key a batch keeps (None: the last put)."""
        self._json_positions = tuple(
            (i, c.name) for i, c in enumerate(columns) if c.type_name in _JSON_TYPES
        )
        self._tz_positions = tuple(
            (i, c.name) for i, c in enumerate(columns) if c.type_name in _TZ_TYPES
        )
        updated = update_columns
        if updated is None:
            updated = tuple(name for name in self.names if name not in key)
        rule = ConflictRule(
            key, rules.on_conflict == "ignore", updated, rules.version_column, tuple(merge.items())
        )
        # A column the update leaves alone keeps the value the key's first row inserted, as
        # the rows put one after another would leave it.
        kept = [name for name in self.names if name not in key and name not in updated]
        self.merger: Merger | None = None
        """How the rows of one key combine in a batch (None: one replaces the other)."""
        if rules.on_conflict != "ignore" and (merge or kept):
            self.merger = RowMerger(self.names, merge, kept, self.replaces)
        self.query: sql.Composed = insert_statement(info.schema, info.name, self.names, rule)
        """The INSERT of one row (``executemany``, and writes inside a caller's transaction)."""
        self.delete_query: sql.Composed | None = (
            delete_statement(info.schema, info.name, key, rules.version_column) if key else None
        )
        """The DELETE of one key (None: append-only)."""
        self._delete_names = (*key, *filter(None, [rules.version_column]))
        self._delete_set = frozenset(self._delete_names)
        # A delete compares its key with the column's (executemany sends an int as a number,
        # and text = integer has no operator): a number for a text column goes as its text.
        self._delete_text = tuple(
            index
            for index, name in enumerate(self._delete_names)
            if self._type_of(columns, name) in _TEXT_TYPES
        )
        self._delete_tz = tuple(
            (index, name)
            for index, name in enumerate(self._delete_names)
            if name in self.name_set and self._type_of(columns, name) in _TZ_TYPES
        )
        self.writer: Writer = writer_for(
            rules.method, info.schema, info.name, columns, rule, progress
        )
        # The table's other columns, so that a row naming one is told why it is not written.
        self._left_out: dict[str, Column] = {
            c.name: c for c in columns.table_columns if c.name not in self.name_set
        }
        self._table_order = tuple(c.name for c in columns.table_columns)

    def prepare(self, row: Mapping[str, Any]) -> tuple[Hashable, Params]:
        """Check ``row`` against the written columns; return its key and parameters (see
        PostgresUpsert.prepare)."""
        if type(row) is not dict and not isinstance(row, Mapping):  # the ABC check is slow
            raise TypeError(f"row must be a Mapping of column -> value, got {type(row).__name__}")
        if row.keys() != self.name_set:
            raise ValueError(self._shape_error(row))
        params: Params = self._params_of(row)
        if self._json_positions or self._tz_positions:
            params = self._convert(params)
        key = self._key_of(params)
        if self._key_fixes or key is None or (self._composite and None in key):  # type: ignore[operator]
            key = self._fix_key(key)
        try:
            hash(key)
        except TypeError:
            raise TypeError(
                f"key {self.rules.key!r} has an unhashable value: {short(key)}"
            ) from None
        return key, params

    @staticmethod
    def _type_of(columns: Sequence[Column], name: str) -> str:
        return next(column.type_name for column in columns if column.name == name)

    def prepare_delete(self, row: Mapping[str, Any]) -> tuple[Hashable, Deletion]:
        """Check a delete's ``row`` (the key columns, and the version column with one); return
        its key, as prepare() returns an upsert's, and its params (see
        PostgresUpsert.prepare_delete)."""
        rules = self.rules
        if not rules.key:
            raise TypeError(
                f"{rules.table!r} is written append-only (key=None): there is no key to delete by"
            )
        if type(row) is not dict and not isinstance(row, Mapping):
            raise TypeError(f"a delete must name its key, got {type(row).__name__}")
        names = self._delete_names
        if row.keys() != self._delete_set:
            missing = [name for name in names if name not in row]
            extra = [name for name in row if name not in names]
            problems = []
            if missing:
                problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
            if extra:
                problems.append(f"column(s) {', '.join(map(repr, extra))} not of the key")
            version = rules.version_column
            needs = f" and the version column {version!r}" if version else ""
            raise ValueError(
                f"delete from {rules.table!r}: {'; '.join(problems)} (a delete gives the key "
                f"{list(rules.key)}{needs})"
            )
        values = [row[name] for name in names]
        for index, name in self._delete_tz:
            value = values[index]
            if isinstance(value, datetime) and value.tzinfo is None:
                if rules.naive_timezone is None:
                    raise ValueError(
                        f"column {name!r} is timestamptz but got a naive datetime; give it a "
                        "tzinfo (or the sink a naive_timezone)"
                    )
                values[index] = value.replace(tzinfo=rules.naive_timezone)
        for index in self._delete_text:
            values[index] = text_key(values[index])
        if None in values:
            name = names[values.index(None)]
            what = "version column" if name == rules.version_column else "key column"
            raise ValueError(f"{what} {name!r} of a delete is None: it would match no row")
        width = len(rules.key)
        key = self._fix_key(tuple(values[:width]) if width > 1 else values[0])
        try:
            hash(key)
        except TypeError:
            raise TypeError(f"key {rules.key!r} has an unhashable value: {short(key)}") from None
        return key, Deletion(values)

    def _fix_key(self, key: Any) -> Hashable:
        names = self.rules.key
        values = list(key) if len(names) > 1 else [key]
        if self._null_key_error is not None and None in values:
            column = names[values.index(None)]
            raise ValueError(f"key column {column!r} is None: {self._null_key_error}")
        for index, fix in self._key_fixes:
            values[index] = fix(values[index])
        return tuple(values) if len(names) > 1 else values[0]

    def _shape_error(self, row: Mapping[str, Any]) -> str:
        rules = self.rules
        missing = [name for name in self.names if name not in row]
        extra = [name for name in row if name not in self.name_set]
        unknown = [name for name in extra if name not in self._left_out]
        left_out = [self._left_out[name] for name in extra if name in self._left_out]
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
        # Columns of the table that are not written: say why, and how to write them.
        defaulted = {c.name for c in left_out if not c.generated}
        listed = [n for n in self._table_order if n in defaulted or n in self.name_set]
        for column in left_out:
            if column.generated:
                problems.append(f"column {column.name!r} is generated and cannot be written")
            elif rules.columns is None:
                suggested = [name for name in listed if name not in rules.key]
                problems.append(
                    f"column {column.name!r} has a default: list it in columns={suggested} "
                    "to write it"
                )
            else:
                problems.append(
                    f"column {column.name!r} is not in columns={list(rules.columns)}: add it "
                    "there to write it"
                )
        return f"row for {rules.table!r}: {'; '.join(problems)} (writes {list(self.names)})"

    def _convert(self, params: Params) -> Params:
        values = list(params)
        for index, name in self._json_positions:
            value = values[index]
            if value is None or isinstance(value, (Json, Jsonb)):
                continue
            # Serialized (or checked) here, in the producer, so that a bad value fails its own
            # put; the text goes out untyped and the server reads it as the column's json type.
            try:
                if isinstance(value, str):
                    _json_text.decode(value)  # JSON text already, as psycopg takes a str
                else:
                    values[index] = _to_json(value)
            except (TypeError, ValueError) as error:
                raise json_error(name, value, error) from None
        for index, name in self._tz_positions:
            value = values[index]
            if isinstance(value, datetime) and value.tzinfo is None:
                if self.rules.naive_timezone is not None:
                    values[index] = value.replace(tzinfo=self.rules.naive_timezone)
                    continue
                raise ValueError(
                    f"column {name!r} is timestamptz but got a naive datetime; give it a "
                    "tzinfo (or the sink a naive_timezone)"
                )
        return tuple(values)


def _key_rules(
    info: TableInfo, columns: Sequence[Column], key: tuple[str, ...]
) -> tuple[tuple[tuple[int, Callable[[Any], Any]], ...], str | None]:
    """Key values are compared in Python to merge rows of one key: the fixes that make values
    PostgreSQL holds equal compare equal, and why a NULL in the key is refused (None: it is
    not), as ON CONFLICT could never match it."""
    if not key:  # append-only: every row is its own
        return (), None
    by_name = {column.name: column for column in columns}
    fixes = []
    for index, name in enumerate(key):
        fix = KEY_CANONICAL.get(by_name[name].type_name.rpartition(".")[2])
        if fix is not None:
            fixes.append((index, fix))
    not_null = [name for name in key if by_name[name].not_null]
    if not_null:
        return tuple(fixes), f"key column {not_null[0]!r} is NOT NULL"
    if frozenset(key) not in info.nulls_not_distinct:
        return tuple(fixes), (
            "a NULL key never matches an existing row in a unique index (unless it is "
            "NULLS NOT DISTINCT), so the row could never be updated"
        )
    return tuple(fixes), None


def _replace_rule(rules: Rules, positions: Mapping[str, int]) -> Replaces | None:
    """Which row of a key a batch keeps, as the statement would leave it: the first put when
    conflicts are ignored, the highest version with a version column (the first of equal
    ones), else None: the last put."""
    if rules.on_conflict == "ignore":
        return _first_or_delete
    if rules.version_column is None:
        return None
    at = positions[rules.version_column]

    def newer(kept: Params, row: Params) -> bool:
        # A delete's version is its last param; it applies only to lower versions, as a put.
        new = row[-1] if type(row) is Deletion else row[at]
        old = kept[-1] if type(kept) is Deletion else kept[at]
        if new is None:
            return False
        try:
            return bool(old is None or new > old)
        except TypeError:  # versions that do not compare: the database decides
            return True

    return newer


def _first_or_delete(kept: Params, row: Params) -> bool:
    """DO NOTHING keeps the first put of a key; a delete after it is the newest write."""
    return type(row) is Deletion or keep_first(kept, row)


def short(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut for a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


class _NotJSONConstant(ValueError):
    """NaN, Infinity or -Infinity in JSON text: Python reads them, PostgreSQL refuses them."""


def _refuse_constant(constant: str) -> Any:
    raise _NotJSONConstant(constant)


_json_text = json.JSONDecoder(parse_constant=_refuse_constant)


def json_error(column: str, value: object, error: Exception) -> Exception:
    """The error for a json column's value that is not JSON, naming the column."""
    if isinstance(error, _NotJSONConstant):
        return ValueError(
            f"column {column!r}: the JSON text holds {error}: NaN and Infinity are not JSON, "
            "PostgreSQL refuses them"
        )
    if "Out of range float" in str(error):
        return ValueError(
            f"column {column!r}: the value holds a NaN or Infinity float: NaN and Infinity are "
            "not JSON, PostgreSQL refuses them"
        )
    if isinstance(error, json.JSONDecodeError) and isinstance(value, str):
        return ValueError(
            f"column {column!r}: a str is taken as JSON text, and this one is not JSON "
            f'({error}); to store a JSON string, wrap it: psycopg.types.json.Jsonb("hello"), '
            'or pass json.dumps("hello")'
        )
    kind = TypeError if isinstance(error, TypeError) else ValueError
    return kind(f"column {column!r}: value is not JSON: {error}")
