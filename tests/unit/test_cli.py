"""The command line's errors: an option a command does not know is named under that command's
usage, and the bench says where the research sections' options went."""

from __future__ import annotations

import pytest

from writebehind.tools.cli import main


def test_a_research_option_given_to_the_bench_says_where_it_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["bench", "--only", "journal"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m writebehind bench")
    assert "unrecognized arguments: --only journal" in err
    assert "python -m benchmarks.research --help" in err


def test_an_unknown_option_of_the_demo_is_an_error_of_the_demo(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["demo", "--bogus"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m writebehind demo")
    assert "unrecognized arguments: --bogus" in err
    assert "benchmarks.research" not in err
