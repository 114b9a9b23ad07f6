"""The journal's segment files on this machine's disk: ``python benchmarks/journal_segments.py``.

Appends per second of 300-byte payloads, one record per append, for each sync mode, from one
thread and from four; the read-back rate; and what one ``fdatasync`` of a small write costs.
``--dir`` picks the file system (default: a temporary directory under the current one, since
/tmp may be a RAM disk where fdatasync costs nothing); ``--seconds`` the length of each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from writebehind.journal.segments import SegmentReader, SegmentWriter, SyncMode

PAYLOAD = b"x" * 300


def run_appends(root: Path, sync: SyncMode, threads: int, seconds: float, group: int) -> float:
    journal = SegmentWriter(root, "bench", sync=sync, max_bytes=64 << 30)
    counts = [0] * threads
    stop = time.monotonic() + seconds
    payloads = [PAYLOAD] * group

    def producer(index: int) -> None:
        n = 0
        while time.monotonic() < stop:
            journal.append(payloads)
            n += group
        counts[index] = n

    workers = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    journal.close()
    return sum(counts) / elapsed


def read_rate(root: Path) -> tuple[float, float]:
    directory = next((root / "bench").iterdir())
    start = time.monotonic()
    reader = SegmentReader(directory)
    n = sum(1 for _ in reader.records())
    elapsed = time.monotonic() - start
    size = sum(p.stat().st_size for p in directory.glob("*.seg"))
    return n / elapsed, size / elapsed / 1e6


def fdatasync_cost(root: Path, count: int = 200) -> list[float]:
    path = root / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    costs = []
    try:
        for _ in range(count):
            os.write(fd, PAYLOAD)
            start = time.perf_counter()
            os.fdatasync(fd)
            costs.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".", help="where to create the journal")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    modes: list[SyncMode] = ["process", "interval", "always"]
    print(f"{'sync':10s} {'threads':>7s} {'group':>5s} {'appends/s':>12s} {'records/s':>12s}")
    for sync in modes:
        for threads in (1, 4):
            for group in (1, 100):
                with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                    rate = run_appends(Path(tmp), sync, threads, args.seconds, group)
                    print(f"{sync:10s} {threads:7d} {group:5d} {rate / group:12,.0f} {rate:12,.0f}")
                    if sync == "process" and threads == 1 and group == 100:
                        records, mb = read_rate(Path(tmp))
                        print(f"read back: {records:,.0f} records/s ({mb:,.0f} MB/s)")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        costs = sorted(fdatasync_cost(Path(tmp)))
    print(
        f"fdatasync after a 300-byte write: median {statistics.median(costs) * 1e6:,.0f} us, "
        f"p99 {costs[int(len(costs) * 0.99)] * 1e6:,.0f} us"
    )


if __name__ == "__main__":
    main()
