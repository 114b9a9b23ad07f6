"""Settings of the example project: one app, PostgreSQL, writebehind.

The database comes from the environment variable WRITEBEHIND_DSN (a libpq conninfo or URI).
WRITEBEHIND has no DSN here: writebehind derives it from DATABASES["default"].
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_database = conninfo_to_dict(os.environ.get("WRITEBEHIND_DSN", "dbname=writebehind_example"))

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "writebehind.django",
    "pageviews",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.pop("dbname", ""),
        "USER": _database.pop("user", ""),
        "PASSWORD": _database.pop("password", ""),
        "HOST": _database.pop("host", ""),
        "PORT": _database.pop("port", ""),
        "OPTIONS": _database,
    }
}

WRITEBEHIND = {
    "QUEUES": {
        "last_visits": {
            "table": "pageviews.LastVisit",  # the model, by its label; upserted on its page
            "key": "page",
            "merge": {"views": "add", "first_seen": "min", "last_seen": "max"},
            "flush_interval": 0.5,
            "on_failure": "pageviews.failures.record",
        },
        "hits": {
            "table": "pageviews.Hit",  # keyed on its primary key
            "flush_interval": 0.5,
            "on_failure": "pageviews.failures.record_hits",
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"writebehind": {"handlers": ["console"], "level": "WARNING"}},
}
