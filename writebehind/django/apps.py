"""The Django app configuration: reads WRITEBEHIND at startup and registers the checks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.signals import setting_changed

from .._config import ProcessQueues
from .settings import queue_specs

APP_LABEL = "writebehind"


class WriteBehindConfig(AppConfig):
    """``writebehind.django``: one set of queues per process, checked at startup."""

    name = "writebehind.django"
    label = APP_LABEL
    verbose_name = "writebehind"
    default = True

    queues: ProcessQueues

    def ready(self) -> None:
        self.queues = ProcessQueues(queue_specs())
        checks.register(check_tables, checks.Tags.database)
        setting_changed.connect(self._setting_changed, dispatch_uid="writebehind-settings")

    def _setting_changed(self, *, setting: str, **_: Any) -> None:
        # override_settings in tests: later get_queue() calls follow the new settings.
        if setting in ("WRITEBEHIND", "DATABASES"):
            self.queues.close()
            self.queues = ProcessQueues(queue_specs())


def check_tables(**kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check --database default``: each queue's table, key and columns exist."""
    if not kwargs.get("databases"):
        return []
    from django.apps import apps

    config = apps.get_app_config(APP_LABEL)
    assert isinstance(config, WriteBehindConfig)
    errors: list[checks.CheckMessage] = []
    for spec in config.queues.specs.values():
        try:
            spec.verify()
        except Exception as error:
            errors.append(
                checks.Error(
                    f"{spec.setting}: {error}",
                    hint="Create the table (migrate), or fix the queue's table, key or columns.",
                    obj=spec.setting,
                    id="writebehind.E001",
                )
            )
    return errors
