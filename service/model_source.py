"""Which model folder the service runs: configured, shipped, or a seeded random fallback.

Order: `NOWCAST_MODEL_DIR` if set; else the shipped `models/weights/small-v3` if it holds a
`model.yaml`; else a seeded random model of `fallback_model_config` (default `tiny`) written once
into `model_cache_dir`. The fallback forecasts noise and is logged loudly: it exists so that the
service can run end to end before trained weights are available.

The fallback folder is written by a child Python process, so that the API process, which calls
this too, never imports torch. Concurrent callers (API and workers starting together) are safe:
each writes into its own temporary folder and renames it into place; the first rename wins.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from service.settings import SHIPPED_MODEL_DIR, Settings

logger = logging.getLogger(__name__)

FALLBACK_SEED = 0

_CREATE_RANDOM_MODEL = (
    "import sys; from models.bundle import create_random_model_dir; "
    "create_random_model_dir(sys.argv[1], sys.argv[2], seed=int(sys.argv[3]))"
)


def resolve_model_dir(settings: Settings) -> Path:
    """The model folder to load; creates the random fallback when no trained model exists."""
    configured = settings.resolved_model_dir()
    if configured is not None:
        if not (configured / "model.yaml").is_file():
            raise FileNotFoundError(
                f"model folder {configured} has no model.yaml; set NOWCAST_MODEL_DIR to a folder "
                "written by `nowcast train`/`nowcast export`, or unset it"
            )
        return configured
    target = (
        settings.model_cache_dir / f"random-{settings.fallback_model_config}-seed{FALLBACK_SEED}"
    )
    logger.warning(
        "NO TRAINED MODEL: %s is missing and NOWCAST_MODEL_DIR is unset; running a RANDOM "
        "UNTRAINED %r model from %s. Its forecasts are noise. Set NOWCAST_MODEL_DIR to a "
        "trained model folder.",
        SHIPPED_MODEL_DIR,
        settings.fallback_model_config,
        target,
    )
    if not (target / "model.yaml").is_file():
        _create_random_model(target, settings.fallback_model_config)
    return target


def _create_random_model(target: Path, config_name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    logger.info("writing random %r model to %s", config_name, target)
    subprocess.run(
        [sys.executable, "-c", _CREATE_RANDOM_MODEL, str(scratch), config_name, str(FALLBACK_SEED)],
        check=True,
    )
    try:
        scratch.rename(target)
    except OSError:
        if not (target / "model.yaml").is_file():
            raise
        shutil.rmtree(scratch, ignore_errors=True)  # another process got there first
