"""A private PostgreSQL for examples, benchmarks and demos (extra ``embedded``: pgserver)."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["database"]


@contextmanager
def database(dsn: str | None = None) -> Iterator[str]:
    """Yield ``dsn`` if given; else start an embedded PostgreSQL in a temporary folder, yield its
    conninfo, and stop and delete it on exit.

    Raises ImportError naming the ``embedded`` extra when pgserver is not installed.
    """
    if dsn:
        yield dsn
        return
    # pgserver warns on import where XDG_RUNTIME_DIR is unset (containers, CI); it is harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pgserver
    except ImportError:
        raise ImportError(
            "the embedded PostgreSQL needs the 'embedded' extra: "
            "pip install 'writebehind[embedded]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="writebehind-pg-") as folder:
        server = pgserver.get_server(folder, cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()
