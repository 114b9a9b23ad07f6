"""Django app: write-behind queues configured in settings.

.. code-block:: python

    INSTALLED_APPS += ["writebehind.django"]
    WRITEBEHIND = {
        "DSN": "postgresql://app@db/app",  # optional: derived from DATABASES["default"]
        "QUEUES": {"events": {"table": "events", "key": "id"}},
    }

    from . import get_queue
    get_queue("events").put(row)

In tests, ``WRITEBEHIND = {"EAGER": True, ...}`` makes ``put()`` write at once through Django's
own connection, so that a ``TestCase`` rolls the rows back with the test.

Needs Django (extra ``django``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    from django.apps import apps as django_apps
    from django.core.exceptions import ImproperlyConfigured
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"writebehind.django needs Django: pip install 'writebehind[django]' ({missing})"
    ) from missing

from ..integrations.processes import CLOSE_TIMEOUT, Queue

if TYPE_CHECKING:
    from .apps import WriteBehindConfig

__all__ = ["close_queues", "get_queue"]


def get_queue(name: str) -> Queue:
    """The queue ``name`` of ``WRITEBEHIND["QUEUES"]``: the same object on every call in a
    process, built on the first (no thread or connection before), its own in each process.

    A ``WriteBehindQueue``; with ``WRITEBEHIND["EAGER"]`` an ``EagerQueue``, whose ``put()``
    writes the row before it returns through ``django.db.connection``, in a savepoint: under
    ``TestCase`` the row is rolled back with the test, and a row the database refuses goes to
    ``on_failure`` while the test's transaction goes on.

    ImproperlyConfigured if no such queue is configured or the app is not installed.
    """
    try:
        return _app_config().queues.get(name)
    except KeyError as error:
        raise ImproperlyConfigured(f"WRITEBEHIND['QUEUES']: {error.args[0]}") from None


def close_queues(timeout: float | None = CLOSE_TIMEOUT) -> None:
    """Drain and close the queues this process has built; later ``get_queue`` calls build new
    ones. For tests, before the test database goes away; servers need not, the exit hook
    drains.

    Waits at most ``timeout`` seconds in all, 5 by default (None: as long as the drain takes),
    so that a ``tearDown`` never hangs: under ``TestCase`` a queue's worker may wait for a row
    lock that the test's own transaction holds until after ``tearDown``. A queue still draining
    then logs a warning and goes on in the background. Eager queues close at once.
    """
    _app_config().queues.close(timeout)


def _app_config() -> WriteBehindConfig:
    from .apps import APP_LABEL, WriteBehindConfig

    try:
        config = django_apps.get_app_config(APP_LABEL)
    except LookupError:
        raise ImproperlyConfigured(
            "add 'writebehind.django' to INSTALLED_APPS to use writebehind's Django queues"
        ) from None
    assert isinstance(config, WriteBehindConfig)
    return config
