"""Medians, spreads and percentiles of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Rates", "percentile", "spread"]


def spread(values: Sequence[float]) -> float:
    """(max - min) / median, as a fraction; 0 for a single value."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """The value at ``fraction`` (0.5, 0.99) of ``sorted_values`` (nearest rank)."""
    if not sorted_values:
        return 0
    rank = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class Rates:
    """The rows/s of repeated runs of one side of a comparison."""

    label: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    @property
    def spread(self) -> float:
        return spread(self.values) if self.values else 0.0

    def ratio(self, other: Rates) -> float | None:
        """This median over ``other``'s, None when either has none."""
        if not self.values or not other.values or not other.median:
            return None
        return self.median / other.median
