import sys

import pytest

from writebehind.embedded import database


def test_a_given_dsn_is_used_as_it_is() -> None:
    with database("host=/nowhere dbname=x") as dsn:
        assert dsn == "host=/nowhere dbname=x"


def test_without_pgserver_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"writebehind\[embedded\]"), database():
        pass
