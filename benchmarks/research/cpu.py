"""Where the CPU time of a run goes: this process (every thread, one GIL), the PostgreSQL
server (its postmaster and every backend, ended ones included), and the whole machine.

Read from ``/proc``, so only for a server on this machine whose data directory the role may
read (``SHOW data_directory``: superuser or pg_read_all_settings); otherwise the server's share
is None. The machine's share counts every process, other users' work included.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

__all__ = ["CpuMeter", "CpuSample", "CpuUse", "cpu_sample", "cpu_use", "server_pid", "wait_reaped"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def server_pid(dsn: str) -> int | None:
    """The postmaster's pid, if the server runs on this machine and says where its data
    directory is; else None."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            found = conn.execute("SHOW data_directory").fetchone()
        pid_file = Path(str(found[0]) if found else "") / "postmaster.pid"
        pid = int(pid_file.read_text().split("\n", 1)[0])
        Path(f"/proc/{pid}/stat").read_text()
    except (psycopg.Error, OSError, ValueError):
        return None
    return pid


def _stat_fields(pid: int | str) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 0


def _server_ticks(postmaster: int) -> int:
    """The postmaster's CPU ticks and its reaped children's, plus every live child's."""
    # The children first: one reaped after its own stat was read is counted twice (a tick or
    # two, rarely), where read the other way round one reaped in between was not counted at all.
    total = 0
    for child in _process_stats():
        if int(child[1]) == postmaster:  # ppid
            total += int(child[11]) + int(child[12])
    fields = _stat_fields(postmaster)
    # utime, stime, cutime, cstime are fields 14-17 of stat(5), 11-14 here.
    return total + sum(int(value) for value in fields[11:15])


def _process_stats() -> list[list[str]]:
    """The stat(5) fields of every process (state first), read in one pass over /proc; one
    that ends meanwhile is left out (its time is in its parent's cutime then)."""
    stats = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                try:
                    stats.append(_stat_fields(entry.name))
                except OSError:
                    continue
    return stats


def wait_reaped(postmaster: int | None, timeout: float = 1.0) -> None:
    """Wait (at most ``timeout`` seconds) until no backend of the server is a zombie: an ended
    backend's time shows in neither its own stat nor the postmaster's until it is reaped."""
    if postmaster is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(
            fields[0] == "Z" and int(fields[1]) == postmaster for fields in _process_stats()
        ):
            return
        time.sleep(0.005)


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of every CPU since boot."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle, iowait
    total = sum(values[:8])  # guest time is already inside user time
    return total - idle, total


@dataclass(frozen=True)
class CpuSample:
    """CPU counters at one moment."""

    wall: float
    client: float
    server_ticks: int | None
    machine_busy: int
    machine_total: int


@dataclass(frozen=True)
class CpuUse:
    """Cores used on average between two samples (1.0: one core all the time)."""

    client: float
    server: float | None
    machine: float


def cpu_sample(postmaster: int | None) -> CpuSample:
    """The counters now; the server's when ``postmaster`` is given and readable."""
    server: int | None = None
    if postmaster is not None:
        try:
            server = _server_ticks(postmaster)
        except OSError:
            server = None
    busy, total = _machine_ticks()
    return CpuSample(time.perf_counter(), time.process_time(), server, busy, total)


def cpu_use(before: CpuSample, after: CpuSample, wall: float | None = None) -> CpuUse:
    """The cores used between ``before`` and ``after``, over ``wall`` seconds (default: the
    time between them)."""
    wall = max(after.wall - before.wall if wall is None else wall, 1e-9)
    server = None
    if before.server_ticks is not None and after.server_ticks is not None:
        server = (after.server_ticks - before.server_ticks) / _TICKS / wall
    cpus = os.cpu_count() or 1
    ticks = max(after.machine_total - before.machine_total, 1)
    machine = (after.machine_busy - before.machine_busy) / ticks * cpus
    return CpuUse((after.client - before.client) / wall, server, machine)


class CpuMeter:
    """Measures the cores used over the timed part of one run: start() when its clock starts,
    stop() when it stops (then waits for ended backends to be reaped, outside the time)."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self._start: CpuSample | None = None
        self.used: CpuUse | None = None

    def start(self) -> None:
        self._start = cpu_sample(self.postmaster)

    def stop(self) -> None:
        start = self._start
        if start is None:
            raise RuntimeError("stop() before start()")
        wall = time.perf_counter() - start.wall
        wait_reaped(self.postmaster)
        self.used = cpu_use(start, cpu_sample(self.postmaster), wall)
