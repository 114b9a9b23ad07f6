"""Reading ``settings.WRITEBEHIND``, and a conninfo from ``DATABASES["default"]``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from psycopg import pq
from psycopg.conninfo import make_conninfo

from ..integrations.processes import ProcessQueues, QueueSpec, parse_queues
from ..models._django import model_named
from ._eager import DjangoConnection

__all__ = ["database_conninfo", "eager", "process_queues", "queue_specs"]

SETTINGS_KEYS = ("DSN", "QUEUES", "EAGER")
_POSTGRES_ENGINES = (
    "django.db.backends.postgresql",
    "django.contrib.gis.db.backends.postgis",
)


def process_queues() -> ProcessQueues:
    """This process's queues of ``settings.WRITEBEHIND``: eager ones under ``EAGER``."""
    specs = queue_specs()
    if eager():
        return ProcessQueues(specs, lambda spec: spec.build_eager(DjangoConnection()))
    return ProcessQueues(specs)


def eager() -> bool:
    """``WRITEBEHIND["EAGER"]``, checked: True or False (default False)."""
    value = _config().get("EAGER", False)
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"WRITEBEHIND['EAGER'] must be True or False, got {value!r}")
    return value


def _config() -> Mapping[str, Any]:
    config = getattr(settings, "WRITEBEHIND", {})
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(
            f"WRITEBEHIND must be a dict with 'QUEUES' and optionally 'DSN' and 'EAGER', "
            f"got {config!r}"
        )
    for key in config:
        if key not in SETTINGS_KEYS:
            known = ", ".join(map(repr, SETTINGS_KEYS))
            raise ImproperlyConfigured(
                f"WRITEBEHIND[{key!r}] is not a writebehind setting; they are {known}"
            )
    return config


def queue_specs() -> dict[str, QueueSpec]:
    """The queues of ``settings.WRITEBEHIND``, checked; ImproperlyConfigured naming the key.

    With ``USE_TZ = False``, a queue's sink reads naive datetimes for ``timestamptz`` columns
    in ``TIME_ZONE``, as Django does, unless the queue's options set ``naive_timezone``.
    """
    config = _config()
    eager()
    queues = _with_models(_with_naive_timezone(config.get("QUEUES", {})))
    dsn = config.get("DSN")
    derived = dsn is None
    if derived and isinstance(queues, Mapping) and queues:
        dsn = database_conninfo(settings.DATABASES)
    try:
        return parse_queues(
            dsn,
            queues,
            setting="WRITEBEHIND['QUEUES']",
            dsn_setting="WRITEBEHIND['DSN']",
            # The test runner renames the default database after startup: follow it.
            current_conninfo=_current_database_conninfo if derived else None,
        )
    except (TypeError, ValueError) as error:
        raise ImproperlyConfigured(str(error)) from error


def _with_models(queues: object) -> object:
    """``"table": "app_label.ModelName"`` (as ``AUTH_USER_MODEL`` names a model) made the
    model class; any other name stays a table name."""
    if not isinstance(queues, Mapping):
        return queues
    resolved = {}
    for name, options in queues.items():
        table = options.get("table") if isinstance(options, Mapping) else None
        try:
            model = model_named(table) if isinstance(table, str) else None
        except LookupError as error:
            raise ImproperlyConfigured(
                f"WRITEBEHIND['QUEUES'][{name!r}]['table']: {error}"
            ) from None
        resolved[name] = {**options, "table": model} if model is not None else options
    return resolved


def _with_naive_timezone(queues: object) -> object:
    # With USE_TZ, Django warns about naive datetimes: they stay refused.
    zone = getattr(settings, "TIME_ZONE", None)
    if getattr(settings, "USE_TZ", True) or not zone or not isinstance(queues, Mapping):
        return queues
    return {
        name: {"naive_timezone": zone, **options} if isinstance(options, Mapping) else options
        for name, options in queues.items()
    }


def database_conninfo(databases: Mapping[str, Any]) -> str:
    """A libpq conninfo for ``databases["default"]``: NAME, USER, PASSWORD, HOST, PORT and the
    libpq parameters among OPTIONS (Django's own options, like ``pool``, are left out)."""
    default = databases.get("default")
    if not isinstance(default, Mapping):
        raise ImproperlyConfigured(
            "WRITEBEHIND['DSN'] is not set and DATABASES['default'] is missing: set one of them"
        )
    engine = default.get("ENGINE", "")
    if engine not in _POSTGRES_ENGINES:
        raise ImproperlyConfigured(
            f"WRITEBEHIND['DSN'] is not set and DATABASES['default'] is not PostgreSQL "
            f"(ENGINE {engine!r}): set WRITEBEHIND['DSN']"
        )
    options = default.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured("DATABASES['default']['OPTIONS'] must be a dict")
    params: dict[str, Any] = {k: v for k, v in options.items() if k in _libpq_keywords()}
    name = default.get("NAME")
    if name is None:
        params["dbname"] = "postgres"  # as Django does
    elif name:
        params["dbname"] = name
    for setting, keyword in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if default.get(setting):
            params[keyword] = default[setting]
    if default.get("PORT"):
        params["port"] = str(default["PORT"])
    return make_conninfo("", **params)


def _current_database_conninfo() -> str:
    return database_conninfo(settings.DATABASES)


@lru_cache(maxsize=1)
def _libpq_keywords() -> frozenset[str]:
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())
