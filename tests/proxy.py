"""A TCP proxy in front of the test server that loses a connection at a chosen moment: after a
statement reached the server, before its reply reaches the client (a COMMIT whose reply was
lost), or before the statement reaches the server at all."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_READY = b"Z\x00\x00\x00\x05"  # ReadyForQuery: the server has answered everything sent


@dataclass
class Drop:
    """What to lose: the connection whose client sends bytes containing ``marker``."""

    marker: bytes
    reply: bool = True
    """True: the statement reaches the server, and its reply is lost. False: the statement is
    lost, the server never sees it."""
    times: int | None = None
    """How many connections to lose (None: every one, until disarmed)."""


class LossyProxy:
    """Forwards 127.0.0.1:``port`` to the server of ``dsn``; ``arm(Drop(...))`` makes it lose
    connections; ``dropped`` counts those lost."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "/tmp")
        port = int(params.get("port") or 5432)
        self._target: tuple[int, str | tuple[str, int]] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.dsn = make_conninfo(dsn, host="127.0.0.1", port=self.port)
        self._lock = threading.Lock()
        self._drop: Drop | None = None
        self.dropped = 0
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="lossy-proxy", daemon=True)
        self._thread.start()

    def arm(self, drop: Drop | None) -> None:
        with self._lock:
            self._drop = drop

    def _take(self, data: bytes) -> Drop | None:
        """The drop to apply to a connection whose client sent ``data``, if any (counted)."""
        with self._lock:
            drop = self._drop
            if drop is None or drop.marker not in data:
                return None
            self.dropped += 1
            if drop.times is not None:
                drop.times -= 1
                if drop.times <= 0:
                    self._drop = None
            return drop

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family, address = self._target
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            pair = _Pair(self, client, server)
            threading.Thread(target=pair.upstream, daemon=True).start()
            threading.Thread(target=pair.downstream, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)


class _Pair:
    def __init__(self, proxy: LossyProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.lose_reply = threading.Event()

    def upstream(self) -> None:
        try:
            while data := self.client.recv(65536):
                drop = self.proxy._take(data)
                if drop is not None and not drop.reply:
                    break  # the statement never reaches the server
                if drop is not None:
                    self.lose_reply.set()  # before the server can answer
                self.server.sendall(data)
        except OSError:
            pass
        self.end()

    def downstream(self) -> None:
        try:
            while data := self.server.recv(65536):
                if self.lose_reply.is_set():
                    if _READY in data:
                        break  # the server is done with it (committed): the client never hears
                    continue
                self.client.sendall(data)
        except OSError:
            pass
        self.end()

    def end(self) -> None:
        _close(self.client)
        _close(self.server)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def lossy_proxy(dsn: str) -> Iterator[LossyProxy]:
    proxy = LossyProxy(dsn)
    try:
        yield proxy
    finally:
        proxy.close()
