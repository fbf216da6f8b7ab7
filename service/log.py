"""Logging set-up of the service's processes: one line per record, job ids in the messages.

Messages name jobs as `job=<id>`; they never contain API keys or uploaded data.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(processName)s/%(threadName)s %(name)s: %(message)s"


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at `level` (default: `Settings.log_level`, i.e. `NOWCAST_LOG_LEVEL`)."""
    if level is None:
        from service.settings import get_settings

        level = get_settings().log_level
    logging.basicConfig(level=level.upper(), format=FORMAT, force=True)
