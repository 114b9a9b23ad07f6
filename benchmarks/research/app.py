"""The application benchmark: the Flask example under gunicorn, three endpoints compared.

    from benchmarks.research.app import format_app_results, run
    print(format_app_results(run(None, seconds=10, clients=8, workers=2)))

Needs the ``bench`` extra (``pip install 'writebehind[bench]'``: flask, gunicorn, pgserver) and
a source checkout: the server runs ``examples/flask_app.py``, which is not part of the package.

Without a conninfo an embedded PostgreSQL is started. The example's table ``last_visits`` is
created with the example's own ``flask init-db`` and checked with ``flask writebehind check``
(a table made by this run is dropped at the end; in one that existed, only the rows of the
pages ``writebehind-bench/...`` are written, and deleted at the end). Then the example runs
under ``gunicorn --preload -w WORKERS`` on a free port of 127.0.0.1 with three endpoints (see
``benchmarks.research._app_server``):

- ``no-op``: the same view and answer without the write: the ceiling of the HTTP stack;
- ``write in request``: the visit upserted and committed inside the request, through a
  connection pool of each worker's own, before the answer;
- ``writebehind``: the example's view: ``put()``, then 202.

CLIENTS client processes (``benchmarks.research._load``) post visits of 1,000 pages over
keep-alive ``http.client`` connections (gunicorn's default sync worker closes each one after
its answer: the client connects again). After a short warm-up of each endpoint, every endpoint
runs ``seconds / 5`` seconds in each of 5 rounds, in a rotating order; requests/s is the median
of the rounds, as are the POST latency percentiles (p50, p99: from sending the request to the
end of the answer, as a client sees it). The ratio to the no-op endpoint is the median of each
round's ratio: the endpoints of one round ran seconds apart, under the same load of the
machine. After each writebehind round the run
waits until the table holds every visit accepted so far (``lag_s``: how long that took after
the round's last answer). At the end gunicorn is stopped (its workers drain their queues as
they exit) and the views of each endpoint's pages are counted in the table: every accepted
request must be there.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from writebehind.embedded import database

from . import CHECKOUT, checkout_env
from ._gunicorn import serve
from ._load import ClientResult, LoadGenerator, Target

__all__ = ["AppResult", "format_app_results", "run"]

EXAMPLE = CHECKOUT / "examples" / "flask_app.py"
EXAMPLE_VARIABLE = "WRITEBEHIND_BENCH_EXAMPLE"
"""How the server is told where the example is (see benchmarks.research._app_server)."""
TABLE = "last_visits"
ROUNDS = 5
MAX_WARMUP = 1.0
"""Seconds of warm-up per endpoint (less when ``seconds`` is short): each worker builds its
queue and its pool, and Python its caches, before anything is measured."""
LAG_TIMEOUT = 60.0
"""Seconds the table may take to hold every visit accepted in a writebehind round."""
_PAGE_PREFIX = "writebehind-bench/"


@dataclass(frozen=True)
class AppResult:
    """One endpoint's figures: medians of the rounds; ``ratio_to_noop`` is the median of each
    round's ratio of this endpoint's requests/s to the no-op endpoint's."""

    endpoint: str
    requests: int
    """Accepted requests in the measured rounds."""
    seconds: float
    """Seconds measured, all rounds."""
    req_per_s: float
    ratio_to_noop: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Requests not accepted (another status, a connection error), warm-up included."""
    accepted: int = 0
    """Every accepted request, warm-up included: what the table must count."""
    in_table: int | None = None
    """Views of this endpoint's pages in the table once the server stopped (None: no-op)."""
    lag_s: float | None = None
    """writebehind: median seconds from a round's last answer until the table held it all."""

    @property
    def all_persisted(self) -> bool | None:
        """Whether the table counts every accepted request (None for the no-op endpoint)."""
        return None if self.in_table is None else self.in_table == self.accepted


@dataclass(frozen=True)
class _Endpoint:
    name: str
    target: Target
    page_prefix: str | None
    """The page names it writes (None: it writes nothing)."""


def _endpoint(name: str, route: str, status: int, writes: bool) -> _Endpoint:
    pages = f"{_PAGE_PREFIX}{name.replace(' ', '-')}/"
    return _Endpoint(name, Target(f"{route}{pages}", status), pages if writes else None)


NOOP = _endpoint("no-op", "/bench/noop/", 202, writes=False)
DIRECT = _endpoint("write in request", "/bench/direct/", 200, writes=True)
WRITEBEHIND = _endpoint("writebehind", "/visits/", 202, writes=True)
ENDPOINTS = (NOOP, DIRECT, WRITEBEHIND)


@dataclass
class _Tally:
    rates: list[float] = field(default_factory=list)
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    accepted: int = 0
    errors: int = 0

    def add(self, clients: Sequence[ClientResult], measured: bool) -> None:
        self.accepted += sum(c.accepted for c in clients)
        self.errors += sum(c.errors for c in clients)
        if not measured:
            return
        latencies = sorted(t for c in clients for t in c.latencies)
        self.requests += len(latencies)
        self.seconds += max(c.elapsed for c in clients)
        self.rates.append(sum(c.accepted / c.elapsed for c in clients if c.elapsed > 0))
        self.p50s.append(_percentile(latencies, 0.50))
        self.p99s.append(_percentile(latencies, 0.99))


def run(
    dsn: str | None, *, seconds: float = 10.0, clients: int = 8, workers: int = 2
) -> list[AppResult]:
    """Measure the three endpoints; ``seconds`` is each endpoint's measured time in all.

    Starts an embedded PostgreSQL when ``dsn`` is None. Returns the no-op, write-in-request
    and writebehind results, in that order. Leaves no process running: gunicorn and the
    clients are stopped on the way out, whatever happened. RuntimeError when the example's
    table cannot be made or checked, or the server does not start; TimeoutError when a client
    or the table's count does not finish in time.
    """
    _check_arguments(seconds, clients, workers)
    if not EXAMPLE.is_file():
        raise FileNotFoundError(
            f"the application benchmark serves the Flask example of a source checkout, "
            f"not found at {EXAMPLE}"
        )
    with database(dsn) as conninfo:
        env = _server_env(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            existed = conn.execute("SELECT to_regclass(%s)", [TABLE]).fetchone() != (None,)
        try:
            _prepare_table(env, conninfo, existed)
            return _measure(conninfo, env, seconds, clients, workers)
        finally:
            _clean_table(conninfo, created=not existed)


def _measure(
    conninfo: str, env: dict[str, str], seconds: float, clients: int, workers: int
) -> list[AppResult]:
    tallies = {endpoint.name: _Tally() for endpoint in ENDPOINTS}
    per_round = seconds / ROUNDS
    warmup = min(MAX_WARMUP, per_round)
    with (
        psycopg.connect(conninfo, autocommit=True) as conn,
        serve("benchmarks.research._app_server:app", workers=workers, env=env) as server,
        LoadGenerator(server.port, clients) as load,
    ):
        for endpoint in ENDPOINTS:
            tallies[endpoint.name].add(load.run(endpoint.target, warmup), measured=False)
        for round_number in range(ROUNDS):
            shift = round_number % len(ENDPOINTS)
            for endpoint in ENDPOINTS[shift:] + ENDPOINTS[:shift]:
                tally = tallies[endpoint.name]
                tally.add(load.run(endpoint.target, per_round), measured=True)
                if endpoint is WRITEBEHIND:
                    tally.lags.append(_wait_for_views(conn, endpoint, tally.accepted))
    # gunicorn has stopped: its workers drained their queues as they exited.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        in_table = {e.name: _views(conn, e) for e in ENDPOINTS if e.page_prefix is not None}
    ceilings = tallies[NOOP.name].rates
    results = []
    for endpoint in ENDPOINTS:
        tally = tallies[endpoint.name]
        ratios = [
            rate / ceiling for rate, ceiling in zip(tally.rates, ceilings, strict=True) if ceiling
        ]
        results.append(
            AppResult(
                endpoint=endpoint.name,
                requests=tally.requests,
                seconds=tally.seconds,
                req_per_s=statistics.median(tally.rates),
                ratio_to_noop=statistics.median(ratios) if ratios else math.nan,
                p50_ms=statistics.median(tally.p50s) * 1000,
                p99_ms=statistics.median(tally.p99s) * 1000,
                errors=tally.errors,
                accepted=tally.accepted,
                in_table=in_table.get(endpoint.name),
                lag_s=statistics.median(tally.lags) if tally.lags else None,
            )
        )
    return results


def format_app_results(results: Sequence[AppResult]) -> str:
    """A text table of ``results``: one line per endpoint."""
    header = (
        f"{'endpoint':<18} {'req/s':>8} {'x no-op':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'requests':>9} {'errors':>6}  in table"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.in_table is None:
            persisted = "-"
        else:
            verdict = "all" if r.all_persisted else "MISSING"
            persisted = f"{r.in_table:,} of {r.accepted:,} accepted ({verdict})"
            if r.lag_s is not None:
                persisted += f", {r.lag_s:.2f}s behind"
        lines.append(
            f"{r.endpoint:<18} {r.req_per_s:>8,.0f} {r.ratio_to_noop:>8.2f} {r.p50_ms:>7.2f} "
            f"{r.p99_ms:>7.2f} {r.requests:>9,} {r.errors:>6,}  {persisted}"
        )
    return "\n".join(lines)


def _check_arguments(seconds: object, clients: object, workers: object) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, got {seconds!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    for name, value in (("clients", clients), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")


def _server_env(conninfo: str) -> dict[str, str]:
    env = {**os.environ, "WRITEBEHIND_DSN": conninfo, EXAMPLE_VARIABLE: str(EXAMPLE)}
    # Single-process metrics, as without gunicorn.conf.py; and this very checkout imported.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return checkout_env(env)


def _prepare_table(env: dict[str, str], conninfo: str, existed: bool) -> None:
    """Create the example's table if missing and check it (the example's own commands); in a
    table that existed, delete the rows an earlier run may have left."""
    for command in (["init-db"], ["writebehind", "check"]):
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", str(EXAMPLE), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    if existed:
        _clean_table(conninfo, created=False)


def _clean_table(conninfo: str, created: bool) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if created:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
        else:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE page LIKE %s").format(sql.Identifier(TABLE)),
                [_PAGE_PREFIX + "%"],
            )


def _views(conn: psycopg.Connection[Any], endpoint: _Endpoint) -> int:
    query = sql.SQL("SELECT coalesce(sum(views), 0) FROM {} WHERE page LIKE %s")
    row = conn.execute(query.format(sql.Identifier(TABLE)), [f"{endpoint.page_prefix}%"]).fetchone()
    return int(row[0]) if row else 0


def _wait_for_views(conn: psycopg.Connection[Any], endpoint: _Endpoint, expected: int) -> float:
    """Seconds until the table counts ``expected`` views of ``endpoint``'s pages."""
    started = time.perf_counter()
    # The queues live in the server's workers: the table is all this process can watch.
    while _views(conn, endpoint) < expected:
        if time.perf_counter() - started > LAG_TIMEOUT:
            raise TimeoutError(
                f"the table holds {_views(conn, endpoint):,} of {expected:,} accepted visits "
                f"{LAG_TIMEOUT:.0f}s after the {endpoint.name} round"
            )
        time.sleep(0.02)
    return time.perf_counter() - started


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values (NaN for none)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
