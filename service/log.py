"""Logging set-up of the service's processes: one line per record, job ids in the messages.

Messages name jobs as `job=<id>`; they never contain API keys or uploaded data.
"""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(processName)s/%(threadName)s %(name)s: %(message)s"


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at `level` (default `NOWCAST_LOG_LEVEL` or INFO)."""
    level = (level or os.environ.get("NOWCAST_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(level=level, format=FORMAT, force=True)
