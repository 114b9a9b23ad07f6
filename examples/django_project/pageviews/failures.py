"""on_failure of the queues (named by their dotted paths in settings)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def record(rows: list[Mapping[str, Any]], error: BaseException) -> None:
    log.error("visits not recorded (%s): %s", error, [row["page"] for row in rows])


def record_hits(rows: list[Mapping[str, Any]], error: BaseException) -> None:
    log.error("hits not recorded (%s): %s", error, [str(row["id"]) for row in rows])
