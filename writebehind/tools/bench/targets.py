"""The targets, judged on the results of one run of the bench command.

Only the sections that ran are judged (here the throughput section; ``benchmarks/research``
judges its own beside). The targets compare sides measured in the same run; a
missed target is reported, not an error: the machine is shared and noisy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .throughput import RAW_COPY, RAW_EXECUTEMANY, Cell

__all__ = ["Target", "cell_ratio", "ratio_target", "targets"]


@dataclass(frozen=True)
class Target:
    """One target: what was asked, what was measured, and whether it was met."""

    what: str
    measured: str
    met: bool | None
    """None: not measured in this run (a batch size or side left out)."""

    def line(self) -> str:
        if self.met is None:
            return f"- {self.what}: not measured"
        return f"- {self.what}: {self.measured} — {'met' if self.met else 'MISSED'}"


def ratio_target(what: str, value: float | None, at_least: float) -> Target:
    """A target on a ratio of medians."""
    what = f"{what} ≥ {at_least:g}×"
    if value is None:
        return Target(what, "not measured", None)
    return Target(what, f"{value:.2f}×", value >= at_least)


def cell_ratio(cells: Sequence[Cell], path: str, batch: int, side: str, base: str) -> float | None:
    """The ratio of ``side``'s median to ``base``'s at one path and batch size, if measured."""
    for cell in cells:
        if cell.path == path and cell.batch_size == batch:
            mine, theirs = cell.rates.get(side), cell.rates.get(base)
            if mine is not None and theirs is not None:
                return mine.ratio(theirs)
    return None


def targets(results: Mapping[str, Any], default: str) -> list[Target]:
    """The targets of the sections in ``results`` (section name -> its result); ``default``
    labels writebehind's default method."""
    found = []
    cells = results.get("throughput")
    if cells is not None:
        found += [
            ratio_target(
                f"update path, batch 5000: {default} against raw COPY",
                cell_ratio(cells, "update", 5000, default, RAW_COPY),
                0.9,
            ),
            ratio_target(
                f"update path, batch 1000: {default} against raw executemany",
                cell_ratio(cells, "update", 1000, default, RAW_EXECUTEMANY),
                1.0,
            ),
        ]
    return found
