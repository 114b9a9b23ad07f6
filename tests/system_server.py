"""A PostgreSQL of Debian's packages (``postgresql-15``), run by a test in a folder of its own:
for what the embedded server lacks (the translations of its messages, say). Run as root, it
runs as the ``postgres`` user, as Debian's own clusters do; the folder goes with ``stop()``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from psycopg.conninfo import make_conninfo

BIN = Path(os.environ.get("WRITEBEHIND_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def missing() -> str | None:
    """Why such a server cannot run here, or None."""
    if not (BIN / "postgres").exists():
        return f"no PostgreSQL in {BIN} (Debian: apt-get install postgresql-15)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "no postgres user to run PostgreSQL as"
    return None


class SystemServer:
    """``initdb`` and ``pg_ctl start`` with ``settings`` (postgresql.conf lines), listening on
    a Unix socket in its folder only; ``dsn`` connects as ``postgres``. ``locale`` is given to
    initdb (the server's language follows ``lc_messages``)."""

    def __init__(
        self, settings: Mapping[str, str] | None = None, locale: str | None = None
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="writebehind-pg15-"))
        self.data = self.folder / "data"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            shutil.chown(self.folder, self._user, self._user)
        initdb = [str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        if locale is not None:
            initdb.append(f"--locale={locale}")
        self._run(initdb)
        lines = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.folder}'",
            "fsync": "off",
            **dict(settings or {}),
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in lines.items())
        self.dsn = make_conninfo(
            host=str(self.folder), port="5432", user="postgres", dbname="postgres"
        )
        self.start()

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, user=self._user, check=True, capture_output=True, text=True, timeout=120
        )

    def pg_ctl(self, *args: str, wait: bool = True) -> None:
        command = [str(BIN / "pg_ctl"), "-D", str(self.data), *(["-w"] if wait else ["-W"])]
        self._run([*command, *args])

    def start(self) -> None:
        self.pg_ctl("-l", str(self.folder / "log"), "start")

    @property
    def hba(self) -> Path:
        return self.data / "pg_hba.conf"

    def stop(self) -> None:
        """Stop the server (fast) and delete its folder."""
        with suppress(subprocess.CalledProcessError):  # not running
            self.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
