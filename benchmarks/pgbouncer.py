"""A real PgBouncer in front of a PostgreSQL, for tests and benchmarks: ``running_pgbouncer``.

PgBouncer is a program of its own (Debian: ``apt-get install pgbouncer``), not a Python package.
It is started in the foreground on a free 127.0.0.1 port with an ini and auth file in a
temporary folder, and stopped, with the folder deleted, when the ``with`` block ends. It refuses
to run as root: run as root, it runs as an unprivileged user (see ``running_pgbouncer``).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["PgBouncerError", "pgbouncer_path", "running_pgbouncer"]

POOL_MODES = ("session", "transaction", "statement")
# Run as root, the first of these that exists runs pgbouncer (unless the socket folder's owner
# must): pgserver's user made by the embedded server, the PostgreSQL packages' user, nobody.
_UNPRIVILEGED_USERS = ("pgserver", "postgres", "nobody")
# Debian installs pgbouncer in /usr/sbin, which a non-root PATH often lacks.
_SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
_START_ATTEMPTS = 3  # a free port can be taken by another process before pgbouncer binds it


class PgBouncerError(RuntimeError):
    """PgBouncer is not installed, or did not start; the message holds its log."""


def pgbouncer_path() -> str | None:
    """The pgbouncer executable (PATH, then the sbin folders), or None if it is not installed."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path=_SBIN)


@dataclass(frozen=True)
class _Server:
    """Where and as whom pgbouncer logs into PostgreSQL, as the server's own connection saw it."""

    host: str
    port: int
    user: str
    dbname: str
    password: str


@contextmanager
def running_pgbouncer(
    dsn: str,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 20,
    max_client_conn: int = 100,
    start_timeout: float = 10.0,
    settings: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Start pgbouncer in front of the PostgreSQL named by ``dsn``; yield a conninfo that goes
    through it; stop it and delete its files on exit.

    ``dsn`` may name a Unix socket (the embedded server) or a TCP host; libpq's defaults and
    environment fill what it leaves out (one connection is made first to find them out). Every
    database of that server is reachable through pgbouncer as the dsn's user. Clients log in
    without a password when the dsn has none, else with the dsn's password (SCRAM); the yielded
    conninfo is ``dsn`` pointed at ``127.0.0.1`` and pgbouncer's port.

    PgBouncer keeps its defaults but for ``pool_mode`` (``"transaction"``: a server connection
    is a client's only for one transaction, as hosted poolers do), ``pool_size``
    (``default_pool_size``: server connections per database and user) and ``max_client_conn``.
    No prepared statement tracking (``max_prepared_statements = 0`` from 1.21, where it exists):
    a statement prepared by one client is not carried to another server connection, the hard
    case for a client library, and what PgBouncer before 1.21 and many hosted poolers do.
    ``settings`` adds or overrides lines of its ini's ``[pgbouncer]`` section (say,
    ``{"server_login_retry": "1"}``).

    Run as root (pgbouncer refuses it) it runs as an unprivileged user: the owner of the
    server's socket folder when that is not root (it may be the only user allowed in, as for
    the embedded server's ``pgserver``), else the first of ``pgserver``, ``postgres``,
    ``nobody`` that exists. Its folder and files belong to that user, mode 0700/0600.

    Raises PgBouncerError when pgbouncer is not installed or does not accept connections within
    ``start_timeout`` seconds (the message holds its log), ValueError for a bad argument,
    psycopg.OperationalError when ``dsn`` cannot be connected to.
    """
    if pool_mode not in POOL_MODES:
        raise ValueError(f"pool_mode must be one of {', '.join(POOL_MODES)}; got {pool_mode!r}")
    _check_count("pool_size", pool_size)
    _check_count("max_client_conn", max_client_conn)
    if not start_timeout > 0:
        raise ValueError(f"start_timeout must be a positive number of seconds, got {start_timeout}")
    executable = pgbouncer_path()
    if executable is None:
        raise PgBouncerError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    version = _version(executable)
    server = _resolve(dsn, start_timeout)
    account = _account(server.host)
    folder = Path(tempfile.mkdtemp(prefix="writebehind-pgbouncer-"))
    try:
        if account is not None:
            os.chown(folder, account.pw_uid, account.pw_gid)
        auth_file = _write(folder / "users.txt", _auth_line(server), account)
        for attempt in range(_START_ATTEMPTS):
            port = _free_port()
            ini_settings = {
                "listen_addr": "127.0.0.1",
                "listen_port": str(port),
                "unix_socket_dir": "",  # TCP only: no socket file to collide with others'
                "auth_type": "scram-sha-256" if server.password else "trust",
                "auth_file": str(auth_file),
                "admin_users": server.user,
                "pool_mode": pool_mode,
                "default_pool_size": str(pool_size),
                "max_client_conn": str(max_client_conn),
                "logfile": "",  # stderr, which goes to the log file below
            }
            if version >= (1, 21):
                ini_settings["max_prepared_statements"] = "0"
            ini_settings.update(settings or {})
            ini = _write(folder / "pgbouncer.ini", _ini(server, ini_settings), account)
            log_path = folder / f"pgbouncer-{attempt}.log"
            with open(log_path, "wb") as log:
                process = _start(executable, ini, log, account)
                try:
                    conninfo = _client_conninfo(dsn, port)
                    if _wait_until_ready(process, conninfo, start_timeout, log_path):
                        yield conninfo
                        return
                finally:
                    _stop(process)
        raise PgBouncerError(
            f"pgbouncer found no free port in {_START_ATTEMPTS} attempts; its last log:\n"
            + log_path.read_text(errors="replace")
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _version(executable: str) -> tuple[int, int]:
    """(major, minor) from ``pgbouncer --version``'s first line, "PgBouncer 1.18.0"."""
    out = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.match(r"PgBouncer (\d+)\.(\d+)", out)
    if match is None:
        raise PgBouncerError(f"{executable} --version printed no PgBouncer version: {out!r}")
    return int(match[1]), int(match[2])


def _resolve(dsn: str, timeout: float) -> _Server:
    """The server's address, user, database and password as libpq resolved them."""
    with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
        info = conn.info
        # A TCP connection made by host name reports the name; hostaddr, when given, is what
        # was dialled.
        host = info.hostaddr or info.host
        return _Server(host, info.port, info.user, info.dbname, info.password or "")


def _account(host: str) -> pwd.struct_passwd | None:
    """The unprivileged user to run pgbouncer as, or None when not root."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        owner = os.stat(host).st_uid
        if owner != 0:
            return pwd.getpwuid(owner)
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PgBouncerError(
        "pgbouncer refuses to run as root and none of the users "
        f"{', '.join(_UNPRIVILEGED_USERS)} exists to run it"
    )


def _quoted(value: str, quote: str, what: str) -> str:
    # Neither pgbouncer's ini nor its auth file can hold these inside a value.
    if any(c in value for c in (quote, "\\", "\n", "\r", "\0")):
        raise ValueError(f"the dsn's {what} contains a character pgbouncer cannot be given")
    return f"{quote}{value}{quote}"


def _auth_line(server: _Server) -> str:
    user = _quoted(server.user, '"', "user")
    password = _quoted(server.password, '"', "password")
    return f"{user} {password}\n"


def _ini(server: _Server, settings: dict[str, str]) -> str:
    # '*': any database name a client asks for, on the same server, logged in as the dsn's
    # user with the auth file's password.
    fields = (("host", server.host), ("port", str(server.port)), ("user", server.user))
    target = " ".join(key + "=" + _quoted(value, "'", key) for key, value in fields)
    lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, account: pwd.struct_passwd | None) -> Path:
    """A file only its owner reads (the auth file holds a password): pgbouncer's user."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(
    executable: str, ini: Path, log: IO[bytes], account: pwd.struct_passwd | None
) -> subprocess.Popen[bytes]:
    # In the foreground (no -d), so that it is this process's child to stop; it logs to stderr.
    if account is None:
        return subprocess.Popen(
            [executable, str(ini)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    return subprocess.Popen(
        [executable, str(ini)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        cwd=ini.parent,
    )


def _client_conninfo(dsn: str, port: int) -> str:
    """``dsn`` pointed at pgbouncer: the same user, database, password and options."""
    given: dict[str, Any] = conninfo_to_dict(dsn)
    given.pop("hostaddr", None)
    given.update(host="127.0.0.1", port=str(port))
    return make_conninfo("", **given)


def _wait_until_ready(
    process: subprocess.Popen[bytes], conninfo: str, timeout: float, log_path: Path
) -> bool:
    """True once a query runs through pgbouncer; False if its port was taken by another
    process meanwhile. Raises PgBouncerError, with its log, when it exits or does not answer."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    # Polled: pgbouncer signals nothing when it starts listening.
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            if "Address already in use" in log:
                return False
            raise PgBouncerError(f"pgbouncer exited with status {process.returncode}:\n{log}")
        try:
            with psycopg.connect(conninfo, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError as error:
            last_error = error
            time.sleep(0.05)
    raise PgBouncerError(
        f"pgbouncer did not accept a query within {timeout} s (last error: {last_error}); "
        f"its log:\n{log_path.read_text(errors='replace')}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM: immediate shutdown, client connections closed.
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
