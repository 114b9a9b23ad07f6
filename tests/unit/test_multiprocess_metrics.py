"""Prometheus multiprocess mode (gunicorn): the series of several processes add up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.unit.test_dashboard import queried_names

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
from tests.fakes import POISON, FakeSink
from writebehind import WriteBehindQueue

rows = int(sys.argv[1])
with WriteBehindQueue(FakeSink(), name="shared", batch_size=100) as wb:  # the default registry
    for i in range(rows):
        wb.put({"id": i, "value": POISON if i == 0 else "v"})
"""


def test_series_of_several_processes_are_collected_and_summed(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(rows)], cwd=ROOT, env=env)
        for rows in (300, 500)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, {"queue": "shared"})

    assert value("writebehind_enqueued_total") == 800
    assert value("writebehind_persisted_total") == 798
    assert value("writebehind_failed_total") == 2
    assert value("writebehind_queue_depth") == 0  # livesum over the processes
    assert value("writebehind_batch_rows_sum") == 800  # histograms add up too
    names = {sample.name for family in registry.collect() for sample in family.samples}
    assert queried_names() <= names
