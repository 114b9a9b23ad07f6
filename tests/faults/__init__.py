"""The fault suite: each fault on a real PostgreSQL, and the accounting of every accepted row."""
