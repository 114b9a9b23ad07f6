import importlib.resources
import inspect
import queue

import writebehind
from writebehind import (
    CommitInDoubt,
    QueueClosed,
    QueueFull,
    RowsAbandoned,
    SchemaError,
    WriteBehindError,
)
from writebehind.errors import CommitInDoubt as CommitInDoubtFromErrors


def test_public_names() -> None:
    assert sorted(writebehind.__all__) == sorted(
        [
            "CommitInDoubt",
            "EagerQueue",
            "FailureCallback",
            "Journal",
            "Metrics",
            "Params",
            "PostgresUpsert",
            "QueueClosed",
            "QueueFull",
            "RowsAbandoned",
            "SchemaError",
            "Sink",
            "WriteBehindError",
            "WriteBehindQueue",
            "drain_on_signals",
        ]
    )
    for name in writebehind.__all__:
        assert getattr(writebehind, name) is not None, name


def test_exception_tree() -> None:
    assert issubclass(QueueFull, queue.Full) and issubclass(QueueFull, WriteBehindError)
    assert issubclass(QueueClosed, RuntimeError) and issubclass(QueueClosed, WriteBehindError)
    assert issubclass(SchemaError, ValueError) and issubclass(SchemaError, WriteBehindError)
    assert issubclass(RowsAbandoned, WriteBehindError)
    assert issubclass(CommitInDoubt, WriteBehindError) and CommitInDoubt is CommitInDoubtFromErrors
    assert not issubclass(CommitInDoubt, OSError)  # not retried as a sink's own network error


def test_the_package_is_typed() -> None:
    assert importlib.resources.files("writebehind").joinpath("py.typed").is_file()


def test_integrations_expose_their_names() -> None:
    from writebehind.django import close_queues, get_queue
    from writebehind.django.apps import WriteBehindConfig
    from writebehind.flask import WriteBehind

    assert list(inspect.signature(get_queue).parameters) == ["name"]
    assert list(inspect.signature(close_queues).parameters) == ["timeout"]
    assert WriteBehindConfig.name == "writebehind.django" and WriteBehindConfig.default
    assert list(inspect.signature(WriteBehind.init_app).parameters) == ["self", "app"]
    assert list(inspect.signature(WriteBehind.queue).parameters) == ["self", "name"]


def test_an_integration_without_its_framework_names_the_extra() -> None:
    import subprocess
    import sys

    for module, extra in (("flask", "flask"), ("django", "django")):
        code = f"import sys; sys.modules[{module!r}] = None; import writebehind.{module}"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert f"pip install 'writebehind[{extra}]'" in result.stderr, result.stderr
