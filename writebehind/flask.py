"""Flask extension: write-behind queues configured in the application's config.

.. code-block:: python

    app.config["WRITEBEHIND_DSN"] = "postgresql://app@db/app"
    app.config["WRITEBEHIND_QUEUES"] = {"events": {"table": "events", "key": "id"}}
    wb = WriteBehind(app)            # or wb = WriteBehind(); wb.init_app(app) in a factory
    wb.queue("events").put(row)      # in a view

    app.config["WRITEBEHIND_EAGER"] = True   # in tests, before init_app: put() writes at once

Needs Flask (extra ``flask``).
"""

from __future__ import annotations

import weakref

try:
    import click
    from flask import Flask, current_app, has_app_context
    from flask.cli import AppGroup
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"writebehind.flask needs Flask: pip install 'writebehind[flask]' ({missing})"
    ) from missing

from .integrations.processes import ProcessQueues, Queue, QueueSpec, parse_queues

__all__ = ["WriteBehind"]

EXTENSION_KEY = "writebehind"


class WriteBehind:
    """The write-behind queues of one or more Flask applications.

    ``init_app`` reads ``WRITEBEHIND_DSN`` (a conninfo) and ``WRITEBEHIND_QUEUES`` (a dict of
    queue name -> options: ``table`` and ``key``, plus any keyword of ``WriteBehindQueue`` or
    ``PostgresUpsert``; ``on_failure`` may be a dotted path) and checks them: a bad option
    raises ValueError or TypeError naming it, there and then. Nothing starts then: each process
    builds a queue the first time ``queue(name)`` asks for it, so that a server forking after
    loading the application (gunicorn ``--preload``) forks before any thread or connection
    exists, and every worker process writes through queues of its own. Queues drain at
    interpreter exit, or at ``close()``.

    With ``WRITEBEHIND_EAGER = True`` (for tests) ``queue(name)`` gives an ``EagerQueue``
    instead: each ``put()`` checks the row and writes it before it returns, through a connection
    of the queue's own that commits every row (no thread, no batching, no retries).

    The command ``flask writebehind check`` connects and checks every queue's table, key and
    columns.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        self._queues_by_app: weakref.WeakKeyDictionary[Flask, ProcessQueues] = (
            weakref.WeakKeyDictionary()
        )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check ``app``'s config and register as ``app.extensions["writebehind"]``."""
        eager = app.config.get("WRITEBEHIND_EAGER", False)
        if not isinstance(eager, bool):
            raise TypeError(f"WRITEBEHIND_EAGER must be True or False, got {eager!r}")
        specs = parse_queues(
            app.config.get("WRITEBEHIND_DSN"),
            app.config.get("WRITEBEHIND_QUEUES", {}),
            setting="WRITEBEHIND_QUEUES",
            dsn_setting="WRITEBEHIND_DSN",
        )
        build = QueueSpec.build_eager if eager else QueueSpec.build
        self._queues_by_app[app] = ProcessQueues(specs, build)
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(_commands)

    def queue(self, name: str) -> Queue:
        """The queue ``name`` of the current application (this process's; built on first use):
        a ``WriteBehindQueue``, or an ``EagerQueue`` under ``WRITEBEHIND_EAGER``.

        Outside an application context, the application given to ``WriteBehind(app)``, or the
        only one ``init_app`` saw. KeyError if ``WRITEBEHIND_QUEUES`` has no such queue;
        RuntimeError when the application is ambiguous.
        """
        return self._queues().get(name)

    def close(self, timeout: float | None = None) -> None:
        """Drain and close the current application's queues in this process, waiting at most
        ``timeout`` seconds in all (None: as long as the drain takes).

        A later ``queue(name)`` builds a new queue. Tests use this to have every row written
        before they look at the table; servers need not, the exit hook drains.
        """
        self._queues().close(timeout)

    def _queues(self) -> ProcessQueues:
        app = self._app()
        queues = self._queues_by_app.get(app)
        if queues is None:
            raise RuntimeError("WriteBehind.init_app() was not called for this application")
        return queues

    def _app(self) -> Flask:
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            return app
        if self.app is not None:
            return self.app
        apps = list(self._queues_by_app.keys())
        if len(apps) == 1:  # one application: a thread without its context still finds it
            return apps[0]
        raise RuntimeError(
            "no Flask application: use the queues inside an application context, "
            "or give the app to WriteBehind(app)"
        )


_commands = AppGroup("writebehind", help="writebehind queues.")


@_commands.command("check")
def _check_command() -> None:
    """Connect and check each queue's table, key and columns."""
    extension: WriteBehind = current_app.extensions[EXTENSION_KEY]
    specs = extension._queues().specs
    failed = 0
    for name, spec in specs.items():
        try:
            spec.verify()
        except Exception as error:
            failed += 1
            click.echo(f"{spec.setting}: {error}", err=True)
        else:
            click.echo(f"queue {name!r}: table {spec.table_name!r} is ready")
    if failed:
        raise click.exceptions.Exit(1)
