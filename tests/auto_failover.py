"""A real primary/standby pair with automatic failover, for the tests: pg_auto_failover (Debian:
``pg-auto-failover-cli``, ``postgresql-15-auto-failover``) runs a monitor, a primary and a
synchronous standby on 127.0.0.1, each ``pg_autoctl ... --run`` as the ``postgres`` user in a
folder of the test's own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg.conninfo import make_conninfo

BIN = Path("/usr/lib/postgresql/15/bin")


def missing() -> str | None:
    """Why pg_auto_failover cannot run here, or None."""
    if shutil.which("pg_autoctl") is None:
        return "pg_autoctl is not installed (Debian: apt-get install pg-auto-failover-cli)"
    if not (BIN / "pg_ctl").exists():
        return f"no PostgreSQL in {BIN} (Debian: apt-get install postgresql-15)"
    if not Path("/usr/lib/postgresql/15/lib/pgautofailover.so").exists():
        return "no pgautofailover extension (apt-get install postgresql-15-auto-failover)"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Formation:
    """The monitor and two nodes. ``conninfo`` reaches whichever node is the primary (libpq's
    multi-host conninfo, ``target_session_attrs=read-write``)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="writebehind-paf-"))
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            shutil.chown(self.folder, self._user, self._user)
        # pg_autoctl keeps its state under $HOME/.config and .local: the folder's, not root's.
        self._env = {
            **os.environ,
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.folder),
            "XDG_CONFIG_HOME": str(self.folder / ".config"),
            "XDG_DATA_HOME": str(self.folder / ".local" / "share"),
        }
        self._env.pop("PGDATA", None)
        monitor_port, *self.ports = _free_ports(3)
        self.monitor = make_conninfo(
            host="127.0.0.1", port=str(monitor_port), dbname="pg_auto_failover", user="postgres"
        )
        self.conninfo = make_conninfo(
            host="127.0.0.1,127.0.0.1",
            port=",".join(map(str, self.ports)),
            dbname="postgres",
            user="postgres",
            target_session_attrs="read-write",
        )
        self._services: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """The monitor, then the nodes, each waited for: about half a minute."""
        monitor_port = str(psycopg.conninfo.conninfo_to_dict(self.monitor)["port"])
        common = ["--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl", "--run"]
        self._service("monitor", ["create", "monitor", "--pgport", str(monitor_port), *common])
        self._wait(lambda: self._query("SELECT 1") == [(1,)], "the monitor", 60)
        for number, port in enumerate(self.ports, 1):
            monitor = make_conninfo(self.monitor, user="autoctl_node")
            self._service(
                f"node{number}",
                [
                    "create",
                    "postgres",
                    "--pgport",
                    str(port),
                    "--monitor",
                    monitor,
                    *common,
                ],
            )
            # Alone, the first node is "single"; the second makes the pair.
            if number == 1:
                self._wait(lambda: "single" in self.states().values(), "node 1", 120)
            else:
                self.wait_steady()

    def _service(self, name: str, args: list[str]) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                ["pg_autoctl", *args[:2], "--pgdata", str(self.folder / name), *args[2:]],
                user=self._user,
                env=self._env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._services.append(process)

    def _query(self, query: str) -> list[tuple[Any, ...]] | None:
        try:
            with psycopg.connect(self.monitor, connect_timeout=2) as conn:
                return conn.execute(query).fetchall()
        except psycopg.Error:
            return None

    def _wait(self, ready: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready within {timeout:.0f}s:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.folder.glob("*.log"))
        )

    def states(self) -> dict[int, str]:
        """Each node's port and the state it reports, as the monitor sees them (both states
        agreeing: a state in passing shows as ``<reported>→<goal>``)."""
        rows = self._query("SELECT nodeport, reportedstate, goalstate FROM pgautofailover.node")
        return {
            port: reported if reported == goal else f"{reported}→{goal}"
            for port, reported, goal in rows or []
        }

    def primary(self) -> int | None:
        """The port of the primary, once the formation is steady again."""
        states = self.states()
        primaries = [port for port, state in states.items() if state == "primary"]
        steady = sorted(states.values()) == ["primary", "secondary"]
        return primaries[0] if steady and len(primaries) == 1 else None

    def wait_steady(self, timeout: float = 120.0) -> int:
        self._wait(lambda: self.primary() is not None, "a primary and a secondary", timeout)
        port = self.primary()
        assert port is not None
        return port

    def perform_failover(self) -> None:
        subprocess.run(
            ["pg_autoctl", "perform", "failover", "--pgdata", str(self.folder / "monitor")],
            user=self._user,
            env=self._env,
            cwd=self.folder,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def kill_postmaster(self, port: int) -> int:
        """SIGKILL the postmaster of the node on ``port``; its pid."""
        node = self.folder / f"node{self.ports.index(port) + 1}"
        pid = int((node / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        for process in reversed(self._services):
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._services):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        # Postgres processes the services started and left (a SIGKILL above, say).
        for node in self.folder.glob("*/postmaster.pid"):
            with suppress(OSError, ValueError):
                os.kill(int(node.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def formation() -> Iterator[Formation]:
    made = Formation()
    try:
        made.start()
        yield made
    finally:
        made.stop()
