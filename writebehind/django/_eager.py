"""Eager queues' writes through Django's own database connection."""

from __future__ import annotations

from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from .._sink import Params
from ..postgres.upsert import PostgresUpsert

__all__ = ["DjangoConnection"]


class DjangoConnection:
    """Writes through ``django.db.connections[alias]`` (the calling thread's), each row in
    ``transaction.atomic()``: a savepoint inside the test's transaction under ``TestCase``, a
    transaction of its own otherwise. A refused row rolls back its savepoint only; deferred
    constraints (Django's foreign keys) are checked in the savepoint, as a COMMIT would."""

    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.alias = alias

    def configure(self, sink: PostgresUpsert) -> None:
        with transaction.atomic(using=self.alias):
            sink.configure(self._raw_connection())

    def write(self, sink: PostgresUpsert, params: Params) -> None:
        with transaction.atomic(using=self.alias):
            raw = self._raw_connection()
            # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: checked here, in the
            # savepoint, not at a COMMIT that a TestCase never reaches.
            with sink.deferred_checked(raw):
                sink.write_on(raw, [params])

    def _raw_connection(self) -> psycopg.Connection[Any]:
        connection = connections[self.alias]
        connection.ensure_connection()
        raw = connection.connection
        if not isinstance(raw, psycopg.Connection):  # psycopg2, or not PostgreSQL
            raise ImproperlyConfigured(
                f"WRITEBEHIND['EAGER'] writes through DATABASES[{self.alias!r}], which must be "
                f"PostgreSQL through psycopg 3; its connection is {type(raw).__name__}"
            )
        return raw

    def close(self) -> None:
        """Nothing to release: the connection is Django's."""
