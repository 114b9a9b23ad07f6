"""One version: the package's, the installed distribution's and the command line's agree."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import writebehind

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_and_its_distribution_say_the_same_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", writebehind.__version__)
    assert importlib.metadata.version("writebehind") == writebehind.__version__


def test_the_command_line_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "writebehind", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == f"writebehind {writebehind.__version__}"


def test_the_changelog_has_a_section_for_the_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{writebehind.__version__}] - " in changelog
