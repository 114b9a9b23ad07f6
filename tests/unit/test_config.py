"""Queue settings (Flask's WRITEBEHIND_QUEUES, Django's WRITEBEHIND["QUEUES"]): every option is
checked when the settings are read, with a message naming it; nothing connects."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from writebehind.integrations.processes import parse_queues


def parse(**options: Any) -> Any:
    queues = {"q": {"table": "t", "key": "id", **options}}
    return parse_queues("host=/nonexistent", queues, setting="QUEUES", dsn_setting="DSN")


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("connect_timeout", "5", TypeError),  # read from an environment variable
        ("connect_timeout", -1, ValueError),
        ("connect_timeout", math.inf, ValueError),
        ("registry", "nope", TypeError),
        ("maxsize", 0, ValueError),
    ],
)
def test_bad_options_fail_naming_the_queue_and_the_option(
    option: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=re.escape("QUEUES['q']: ") + option):
        parse(**{option: value})


def test_good_options_pass_and_the_registry_is_not_used_yet() -> None:
    registry = CollectorRegistry()
    spec = parse(connect_timeout=2, registry=registry, maxsize=5)["q"]
    assert spec.sink_options == {"connect_timeout": 2}
    assert spec.queue_options == {"registry": registry, "maxsize": 5}
    assert list(registry.collect()) == []  # registering waits for the queue to be built


def test_the_internal_clock_is_no_option() -> None:
    with pytest.raises(ValueError, match=re.escape("QUEUES['q']['clock'] is not an option")) as e:
        parse(clock=lambda: 0.0)
    listed = str(e.value).split("the options are: ")[1].split(", ")
    assert "clock" not in listed
    assert {"batch_size", "connect_timeout", "registry", "table"} <= set(listed)


def test_merge_reaches_the_sink_and_is_checked_when_read() -> None:
    merge = {"views": "add", "last_seen": "max", "first_seen": "min"}
    spec = parse(merge=merge)["q"]
    assert spec.sink_options == {"merge": merge}
    assert spec._sink().merge == merge
    with pytest.raises(ValueError, match=re.escape("QUEUES['q']: merge['views'] must be 'add'")):
        parse(merge={"views": "sum"})
