"""The Django app configuration: reads WRITEBEHIND at startup and registers the checks."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.core.signals import setting_changed

from ..integrations.processes import CLOSE_TIMEOUT, ProcessQueues
from .settings import process_queues

APP_LABEL = "writebehind"


class WriteBehindConfig(AppConfig):
    """``writebehind.django``: one set of queues per process, checked at startup."""

    name = "writebehind.django"
    label = APP_LABEL
    verbose_name = "writebehind"
    default = True

    queues: ProcessQueues

    def ready(self) -> None:
        self.queues = process_queues()
        checks.register(check_tables, checks.Tags.database)
        setting_changed.connect(self._setting_changed, dispatch_uid="writebehind-settings")

    def _setting_changed(self, *, setting: str, **_: Any) -> None:
        # override_settings in tests: later get_queue() calls follow the new settings.
        if setting in ("WRITEBEHIND", "DATABASES", "USE_TZ", "TIME_ZONE"):
            self.queues.close(CLOSE_TIMEOUT)
            self.queues = process_queues()


def check_tables(**kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check --database default``: each queue's table, key and columns exist.

    ``migrate`` runs this check too, before it creates the tables: while migrations are
    pending, a problem is a warning (W001), not an error (E001) that would stop migrate.
    """
    if not kwargs.get("databases"):
        return []
    config = apps.get_app_config(APP_LABEL)
    assert isinstance(config, WriteBehindConfig)
    problems = []
    for spec in config.queues.specs.values():
        try:
            spec.verify()
        except Exception as error:
            problems.append((spec.setting, str(error)))
    if not problems:
        return []
    message_type, code, hint = (
        (
            checks.Warning,
            "writebehind.W001",
            "Migrations are pending: run migrate, then check again.",
        )
        if _migrations_pending()
        else (
            checks.Error,
            "writebehind.E001",
            "Create the table, or fix the queue's table, key or columns.",
        )
    )
    return [message_type(text, hint=hint, obj=setting, id=code) for setting, text in problems]


def _migrations_pending() -> bool:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    except Exception:  # no database to ask: report the problems as errors
        return False
