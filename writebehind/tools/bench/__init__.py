"""``python -m writebehind bench``: writebehind's upsert throughput against raw psycopg loops
doing the same writes, to size a server with. The research sections are in ``benchmarks/`` of a
checkout."""
