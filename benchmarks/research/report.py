"""The tables of the research sections (Markdown), beside the shipped bench's throughput table."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence

from writebehind.tools.bench.report import markdown_table, rate, ratio

from .coalesce import CoalesceResult
from .deletes import MIXED, RAW, RAW_MIXED, UPSERTS, DeletesResult
from .latency import LatencyResult
from .processes import Route
from .threads import ThreadsResult
from .waits import WaitsRow
from .writers import WritersResult

__all__ = [
    "app_table",
    "coalesce_table",
    "deletes_table",
    "latency_table",
    "routes_table",
    "threads_table",
    "waits_table",
    "writers_table",
]


def waits_table(rows: Sequence[WaitsRow], batch_sizes: Sequence[int]) -> str:
    """Socket waits per batch, one column per batch size."""
    headers = ["side", *(f"batch {size}" for size in batch_sizes)]
    body = [[row.label, *(f"{row.per_batch[size]:,.1f}" for size in batch_sizes)] for row in rows]
    return markdown_table(headers, body)


def threads_table(result: ThreadsResult) -> str:
    """Drain rates beside busy threads, and their ratio to the idle drain."""
    idle = result.rates[0]
    body = [
        [
            "none" if count == 0 else str(count),
            rate(rates.median),
            f"{rates.spread:.0%}",
            ratio(rates.ratio(idle)),
        ]
        for count, rates in result.rates.items()
    ]
    return markdown_table(["CPU-bound threads", "rows/s", "spread", "× idle"], body)


def latency_table(results: Sequence[LatencyResult]) -> str:
    """put() latency percentiles and memory per method."""
    body = [
        [
            result.label,
            f"{result.p50_us:.1f}",
            f"{result.p99_us:.1f}",
            f"{result.max_us:,.0f}",
            f"{result.rss_before_mb:.0f}",
            f"{result.peak_rss_mb:.0f}",
        ]
        for result in results
    ]
    headers = ["side", "put p50 µs", "put p99 µs", "put max µs", "RSS before MB", "peak RSS MB"]
    return markdown_table(headers, body)


def writers_table(result: WritersResult) -> str:
    """rows/s of one and two connections (raw) or writers (writebehind), each against its kind
    on one, with the cores the client process, the server and the whole machine used and, for
    writebehind, the put() loop's wall time per row (medians of the runs)."""
    body = []
    for side in result.sides:
        rates = result.rates[side.label]
        ones = [s for s in result.sides if s.kind == side.kind and s.connections == 1]
        cpu = result.cpu.get(side.label, [])
        servers = [use.server for use in cpu if use.server is not None]
        put_us = result.put_us.get(side.label)
        body.append(
            [
                side.label,
                rate(rates.median),
                f"{rates.spread:.0%}",
                ratio(rates.ratio(result.rates[ones[0].label]) if ones else None),
                _median_cell([use.client for use in cpu]),
                _median_cell(servers) if cpu and len(servers) == len(cpu) else "—",
                _median_cell([use.machine for use in cpu]),
                f"{statistics.median(put_us):.1f}" if put_us else "—",
            ]
        )
    headers = [
        "side",
        "rows/s",
        "spread",
        "× 1 connection",
        "client CPU",
        "server CPU",
        "machine CPU",
        "put() µs/row",
    ]
    return markdown_table(headers, body)


def coalesce_table(result: CoalesceResult) -> str:
    """Rows written per 100 puts, writes, put rate and peaks per side (medians of the runs)."""
    body = []
    for label, runs in result.runs.items():
        rates = result.rates(label)
        body.append(
            [
                label,
                f"{statistics.median(run.rows_written for run in runs) * 100 / result.puts:.1f}",
                f"{statistics.median(run.writes for run in runs):,.0f}",
                rate(rates.median),
                f"{rates.spread:.0%}",
                f"{statistics.median(run.peak_depth for run in runs):,.0f}",
                f"{statistics.median(run.peak_waiting for run in runs):,.0f}",
            ]
        )
    headers = [
        "side",
        "rows written per 100 puts",
        "writes",
        "puts/s",
        "spread",
        "peak depth",
        "peak rows waiting",
    ]
    return markdown_table(headers, body)


def _median_cell(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "—"


def routes_table(routes: Sequence[Route]) -> str:
    """Rates of several processes by route, with rows given up and retries."""
    direct = routes[0].rates
    body = [
        [
            route.label,
            rate(route.rates.median),
            f"{route.rates.spread:.0%}",
            ratio(route.rates.ratio(direct)),
            str(route.given_up),
            str(route.retries),
        ]
        for route in routes
    ]
    headers = ["route", "rows/s", "spread", "× direct", "rows given up", "retries"]
    return markdown_table(headers, body)


def app_table(results: Sequence[object]) -> str:
    """The application benchmark's results, one row each, a column per field (dataclasses,
    named tuples or plain objects)."""
    records = [_fields(result) for result in results]
    if not records:
        return "(no results)"
    headers = list(records[0])
    body = [[_cell(record.get(name)) for name in headers] for record in records]
    return markdown_table([name.replace("_", " ") for name in headers], body)


def _fields(result: object) -> Mapping[str, object]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    as_dict = getattr(result, "_asdict", None)
    if callable(as_dict):
        found: Mapping[str, object] = as_dict()
        return found
    if isinstance(result, Mapping):
        return dict(result)
    return {name: value for name, value in vars(result).items() if not name.startswith("_")}


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def deletes_table(result: DeletesResult) -> str:
    """ops/s with and without deletes, each against its raw loop and the upserts alone; then
    µs per put() by kind of row."""
    rates = result.rates
    rows = []
    for label, raw in ((UPSERTS, RAW), (MIXED, RAW_MIXED), (RAW, RAW), (RAW_MIXED, RAW_MIXED)):
        side = rates[label]
        rows.append(
            [
                label,
                rate(side.median),
                f"{side.spread:.0%}",
                ratio(side.ratio(rates[raw])),
                ratio(side.ratio(rates[UPSERTS if label.startswith("writebehind") else RAW])),
            ]
        )
    table = markdown_table(
        ["side", "ops/s", "spread", "÷ its raw loop", "÷ upserts only (same kind)"], rows
    )
    puts = [[label, f"{micros:.2f}"] for label, micros in result.put_micros.items()]
    return table + "\n\n" + markdown_table(["put() of", "µs per put()"], puts)
