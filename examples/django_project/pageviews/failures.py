"""on_failure of the last_visits queue (named by its dotted path in settings)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def record(rows: list[Mapping[str, Any]], error: BaseException) -> None:
    log.error("visits not recorded (%s): %s", error, [row["page"] for row in rows])
