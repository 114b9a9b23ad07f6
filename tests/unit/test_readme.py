"""The guarantees table (docs/guarantees.md) names tests: each one exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_guarantees_table_names_exists() -> None:
    text = (ROOT / "docs" / "guarantees.md").read_text()
    table = text.split("## What is guaranteed\n", 1)[1].split("### In detail", 1)[0]
    named = 0
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith("| guarantee"):
            continue
        path: Path | None = None
        for item in re.findall(r"`([^`]+)`", line.rsplit(" | ", 1)[1]):
            file, _, test = item.partition("::")
            if file:
                path = ROOT / "tests" / file
                assert path.exists(), item
            if test:
                assert path is not None, item
                assert re.search(rf"^def {re.escape(test)}\(", path.read_text(), re.M), item
            named += 1
    assert named > 20
