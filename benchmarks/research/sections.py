"""The research sections, each a method of ``Research``: the shipped bench's runner
(``writebehind.tools.bench.command.Bench``, whose throughput section it keeps) with the
sections that study the rest. See ``benchmarks.research.command`` for what each measures."""

from __future__ import annotations

import importlib
import os
from contextlib import ExitStack
from typing import Any

from writebehind.tools.bench.command import Bench
from writebehind.tools.bench.targets import Target

from .. import pgbouncer as bouncer
from .settings import (
    BUSY_THREADS,
    SECONDARY_BATCH,
    THREADS_ROWS,
    WAITS_ROWS,
    ResearchSettings,
)

__all__ = ["Research"]


class Research(Bench):
    """One run of the research command against one server."""

    settings: ResearchSettings

    def run(self, started: float) -> int:
        """The shipped runner's run; a child process that failed is exit status 1."""
        from ._child import ChildFailed

        try:
            return super().run(started)
        except ChildFailed as failure:
            print(f"FAILED: {failure}", file=self.err)
            return 1

    def _throughput(self) -> Any:
        cells = super()._throughput()
        if self.settings.plot:
            from .plot import plot_throughput

            plot_throughput(cells, self.settings.plot)
            self.emit(f"\nplot: {self.settings.plot}")
        return cells

    def _waits(self) -> Any:
        from .report import waits_table
        from .waits import measure_waits

        s = self.settings
        workload = self._workload(WAITS_ROWS)
        rows = measure_waits(workload, s.methods, batch_sizes=s.batch_sizes, log=self.log)
        self.emit(
            f"\n## Socket waits per batch (update path, {len(workload.rows):,} rows; each wait "
            "gives the GIL away)\n"
        )
        self.emit(waits_table(rows, s.batch_sizes))
        return rows

    def _threads(self) -> Any:
        from .report import threads_table
        from .threads import measure_beside_threads

        s = self.settings
        workload = self._workload(THREADS_ROWS)
        result = measure_beside_threads(
            workload,
            self.default_method(),
            batch_size=SECONDARY_BATCH,
            busy_threads=BUSY_THREADS,
            runs=s.runs,
            log=self.log,
        )
        self.emit(
            f"\n## Beside CPU-bound Python threads ({self.default_label()}, update path, "
            f"batch {SECONDARY_BATCH}; the worker draining a full queue of "
            f"{len(workload.rows):,} rows)\n"
        )
        self.emit(threads_table(result))
        return result

    def _latency(self) -> Any:
        from .latency import measure_latency
        from .report import latency_table

        s = self.settings
        results = measure_latency(
            self._workload(), s.methods, batch_size=SECONDARY_BATCH, log=self.log
        )
        self.emit(
            f"\n## put() latency with the worker busy, and memory (batch {SECONDARY_BATCH}, "
            f"{s.rows:,} rows put by one thread into a queue that holds them all; "
            "one process per side)\n"
        )
        self.emit(latency_table(results))
        return results

    def _pgbouncer(self) -> Any:
        from .processes import DIRECT, PGBOUNCER, measure_routes
        from .report import routes_table

        s = self.settings
        title = (
            f"\n## {s.processes} processes on disjoint keys: through PgBouncer against direct "
            f"({self.default_label()}, update path, batch {SECONDARY_BATCH})\n"
        )
        if bouncer.pgbouncer_path() is None:
            self.emit(title + "\nskipped: PgBouncer is not installed (apt-get install pgbouncer)")
            return None
        with ExitStack() as stack:
            try:
                through = stack.enter_context(bouncer.running_pgbouncer(self.dsn))
            except Exception as error:  # not startable here: say why, measure the rest
                self.emit(title + f"\nskipped: PgBouncer did not start: {error}")
                return None
            routes = measure_routes(
                self._workload(),
                [(DIRECT, self.dsn), (PGBOUNCER, through)],
                processes=s.processes,
                batch_size=SECONDARY_BATCH,
                runs=s.runs,
                method=self.default_method(),
                log=self.log,
            )
        self.emit(title)
        self.emit(routes_table(routes))
        for route in routes:
            if route.given_up:
                self.failures.append(
                    f"{route.label}: {route.given_up} rows given up; first error: {route.errors[0]}"
                )
        return routes

    def _writers(self) -> Any:
        from writebehind.tools.bench.throughput import side_label
        from writebehind.tools.bench.writer import pool_kept, supports_method

        from .report import writers_table
        from .writers import (
            WRITERS_BATCH,
            WRITERS_MAXSIZE,
            WRITERS_METHOD,
            measure_writers,
            writers_sides,
        )

        s = self.settings
        method = WRITERS_METHOD if supports_method() else None
        workload = self._workload()
        title = (
            f"\n## Several writers ({side_label(method)}, update path, batch {WRITERS_BATCH:,}, "
            f"{len(workload.rows):,} rows, maxsize {WRITERS_MAXSIZE:,}): writers=2 against "
            "writers=1, and the raw COPY loop on two connections against one\n"
        )
        missing = _missing_parameter("writers")
        if missing:
            self.emit(title + f"\nskipped: {missing}")
            return None
        with pool_kept(workload.dsn, workload.table):
            result = measure_writers(
                workload,
                writers_sides(workload, method, WRITERS_BATCH),
                method=method,
                batch_size=WRITERS_BATCH,
                runs=s.runs,
                log=self.log,
            )
        self.emit(title)
        self.emit(writers_table(result))
        cpus = os.cpu_count()
        self.emit(
            "\nOne producer thread puts every row, timed from the first put() to the end of "
            'flush(): put() is inside the timing. "puts before the clock": every row put '
            "while the table is locked, then the writers drain the full queue (put() outside "
            "the timing). The raw loop on 2 connections runs in two threads over alternate keys "
            "(disjoint), timed from when both have connected. × 1 connection: against the same "
            "kind of side on one connection (one writer). CPU: cores used on average over the "
            "timed part (1.00: one core all the time) by this process (all its threads, one "
            "GIL), by the PostgreSQL server (all its processes; — when it is not on this "
            f"machine), and by the whole machine ({cpus} CPUs, other work included). put() "
            "µs/row: the put() loop's wall time per row (with the writers writing, or, before "
            "the clock, waiting on the lock)."
        )
        return result

    def _deletes(self) -> Any:
        from .deletes import BATCH, KEYS, measure_deletes
        from .report import deletes_table

        s = self.settings
        result = measure_deletes(self.dsn, f"{s.table}_deletes", s.rows, s.runs, self.log)
        self.emit(
            f"\n## Deletes beside upserts ({s.rows:,} writes over {KEYS:,} keys of a full table, "
            f"batch {BATCH:,}, default method; ops/s, medians of {s.runs})\n"
        )
        self.emit(deletes_table(result))
        return result

    def _coalesce(self) -> Any:
        from .coalesce import (
            COALESCE_BATCH,
            KEYS,
            SAMPLE_EVERY,
            ZIPF_S,
            coalesce_sides,
            measure_coalesce,
            skewed_puts,
        )
        from .report import coalesce_table

        s = self.settings
        maxsize = 10_000
        missing = _missing_parameter("coalesce")
        title = (
            f"\n## Queue-wide coalescing (Zipf s={ZIPF_S:g} over {KEYS:,} keys, "
            f"{s.coalesce_puts:,} puts; default method, batch {COALESCE_BATCH:,}, maxsize "
            f"{maxsize:,})\n"
        )
        if missing:
            self.emit(title + f"\nskipped: {missing}")
            return None
        from datetime import datetime, timezone

        puts = skewed_puts(s.coalesce_puts, datetime.now(timezone.utc))
        result = measure_coalesce(
            self.dsn,
            f"{s.table}_coalesce",
            puts,
            coalesce_sides(),
            batch_size=COALESCE_BATCH,
            maxsize=maxsize,
            runs=s.runs,
            log=self.log,
        )
        self.emit(title)
        self.emit(coalesce_table(result))
        self.emit(
            f"\nThe puts touch {result.distinct_keys:,} keys. Rows written: rows in the writes "
            "the sink committed (a batch combines the rows of one key in any case; coalesce "
            "also combines a row into its key's row still waiting in the queue). One producer "
            "thread; puts/s from the first put() to the end of flush(). Peak depth: "
            "Metrics.current_queue_depth (rows accepted, not yet written); peak rows waiting: "
            f"the rows taking room in the queue; both sampled every {SAMPLE_EVERY} puts. "
            "Every run checked: each key holds the last score put for it, and the last views "
            "put (replace) or their sum (merge)."
        )
        return result

    def _journal(self) -> Any:
        from .journal import journal_report, measure_journal

        s = self.settings
        missing = _missing_parameter("journal")
        if missing:
            self.emit(f"\n## Durable journal\n\nskipped: {missing}")
            return None
        result = measure_journal(
            self._workload(),
            replay_rows=s.replay_rows,
            gib=s.journal_gib,
            runs=s.runs,
            log=self.log,
        )
        self.emit(
            f"\n## Durable journal (default method; {s.replay_rows:,} rows replayed, a "
            f"{s.journal_gib:g} GiB journal at start-up)\n"
        )
        self.emit(journal_report(result))
        return result

    def _app(self) -> Any:
        from .report import app_table

        # Imported by name: the application benchmark is a module of its own, maybe absent.
        run_app = importlib.import_module(".app", __package__).run
        s = self.settings
        self.log(
            f"application benchmark: {s.app_seconds:g} s per endpoint, "
            f"{s.app_clients} clients, {s.app_workers} workers"
        )
        results = run_app(
            self.dsn, seconds=s.app_seconds, clients=s.app_clients, workers=s.app_workers
        )
        self.emit(
            f"\n## Application benchmark (the Flask example under gunicorn, "
            f"{s.app_workers} workers, {s.app_clients} clients, {s.app_seconds:g} s each)\n"
        )
        self.emit(app_table(results))
        return results

    def targets(self, results: dict[str, Any]) -> list[Target]:
        """The shipped bench's targets, then the research sections' and the journal's."""
        from .targets import research_targets

        found = super().targets(results) + research_targets(results, self.default_label())
        if results.get("journal") is not None:
            from .journal import journal_targets

            found += journal_targets(results["journal"])
        return found


def _missing_parameter(name: str) -> str | None:
    """Why a section needing ``WriteBehindQueue(..., name=...)`` cannot run here, if so."""
    import inspect

    from writebehind import WriteBehindQueue

    if name in inspect.signature(WriteBehindQueue).parameters:
        return None
    return f"this writebehind's WriteBehindQueue has no {name}= parameter"
