"""The PostgreSQL sink: PostgresUpsert and its parts.

``configuration`` reads and checks the options, ``catalog`` what the table says,
``statements`` builds the SQL (psycopg.sql), ``methods`` sends a batch (unnest, COPY,
executemany), ``layout`` turns rows into parameters, ``progress`` keeps the journal's progress
rows, ``pools`` and ``watchdog`` hold the connections and bound every wait on them.
"""

from .upsert import PRIMARY_KEY, PostgresUpsert

__all__ = ["PRIMARY_KEY", "PostgresUpsert"]
