"""The Grafana dashboard queries only series that a queue exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from tests.fakes import POISON, FakeSink
from writebehind import WriteBehindQueue

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "writebehind.json"
METRIC_NAME = re.compile(r"\bwritebehind_[a-z_]+\b")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queried_names() -> set[str]:
    exprs = [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]
    variables = [v["definition"] for v in dashboard()["templating"]["list"] if "definition" in v]
    return {name for text in exprs + variables for name in METRIC_NAME.findall(text)}


def exported_names(registry: CollectorRegistry) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_every_metric_the_dashboard_queries_exists_after_a_run() -> None:
    registry = CollectorRegistry()
    sink = FakeSink()
    sink.failures.append(psycopg.OperationalError("connection lost"))  # one retry
    with WriteBehindQueue(sink, registry=registry, retry_backoff=0.001) as wb:
        wb.put({"id": 1, "value": "v"})
        wb.put({"id": 2, "value": POISON})  # one failure
    names = queried_names()
    assert len(names) >= 7
    assert names <= exported_names(registry), names - exported_names(registry)


def test_the_dashboard_has_the_panels_operators_look_for() -> None:
    titles = {panel["title"] for panel in dashboard()["panels"]}
    assert {"Throughput", "Queue depth", "Flush latency p99", "Retries", "Failures"} <= titles
    p99 = next(p for p in dashboard()["panels"] if p["title"] == "Flush latency p99")
    assert "histogram_quantile(0.99" in p99["targets"][0]["expr"]
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all('queue=~"$queue"' in target["expr"] for target in panel["targets"])
