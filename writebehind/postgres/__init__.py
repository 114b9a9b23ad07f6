"""The PostgreSQL sink: PostgresUpsert and its parts.

``upsert`` is the sink's face, PostgresUpsert, which delegates to the parts: ``configuration``
checks the options, ``catalog`` reads what the table says, ``statements`` builds the SQL
(psycopg.sql), ``layout`` turns rows into parameters (``row_values``: what callers hand the
sink into rows), ``methods`` sends a batch (unnest, COPY, executemany) in the transaction that
``writing`` makes of it, ``targets`` writes replayed rows of other columns, ``progress`` keeps the
journal's progress rows, ``connections``, ``pools`` and ``watchdog`` hold the connections and
bound every wait on them.
"""

from .upsert import PRIMARY_KEY, PostgresUpsert

__all__ = ["PRIMARY_KEY", "PostgresUpsert"]
