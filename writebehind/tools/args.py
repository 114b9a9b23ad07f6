"""The argparse types the commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["count"]


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number (``100_000`` and ``100,000`` too), at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse
