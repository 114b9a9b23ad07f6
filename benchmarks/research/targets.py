"""The targets of the research sections, judged on the results of one run; the
throughput section's are the shipped bench's (``writebehind.tools.bench.targets``).

Only the sections that ran are judged. The targets compare sides measured in the same run; a
missed target is reported, not an error: the machine is shared and noisy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from writebehind.tools.bench.targets import Target, ratio_target
from writebehind.tools.bench.throughput import side_label

__all__ = ["research_targets"]


def research_targets(results: Mapping[str, Any], default: str) -> list[Target]:
    """The targets of the sections in ``results`` (section name -> its result); ``default``
    labels writebehind's default method."""
    found = []
    latency = results.get("latency")
    if latency is not None:
        mine = next((result for result in latency if result.label == default), None)
        what = f"put() p50 ≤ 3 µs and p99 ≤ 50 µs ({default})"
        if mine is None:
            found.append(Target(what, "not measured", None))
        else:
            found.append(
                Target(
                    what,
                    f"p50 {mine.p50_us:.1f} µs, p99 {mine.p99_us:.1f} µs",
                    mine.p50_us <= 3 and mine.p99_us <= 50,
                )
            )
    threads = results.get("threads")
    if threads is not None:
        found.append(
            ratio_target(
                f"beside one CPU-bound thread: {default} against idle",
                threads.rates[1].ratio(threads.rates[0]) if 1 in threads.rates else None,
                0.5,
            )
        )
    writers = results.get("writers")
    if writers is not None:
        found.append(
            ratio_target(
                f"update path, batch {writers.batch_size}: {side_label(writers.method)} "
                "writers=2 against writers=1",
                writers.ratio("writebehind"),
                1.4,
            )
        )
    routes = results.get("pgbouncer")
    if routes:
        direct, bouncer = routes
        what = f"through PgBouncer: 0 rows given up, and {default} against direct"
        if bouncer.given_up:
            found.append(Target(f"{what} ≥ 0.8×", f"{bouncer.given_up} rows given up", False))
        else:
            found.append(ratio_target(what, bouncer.rates.ratio(direct.rates), 0.8))
    return found
