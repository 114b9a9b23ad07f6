"""Every example runs, on the test server, so that none rots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart(dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--dsn", dsn, "--rows", "3000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every page holds its last value" in result.stdout
    assert "persisted 3000, failed 1 ['/broken']" in result.stdout
