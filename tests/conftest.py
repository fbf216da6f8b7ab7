"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete `tiny` model folder with seeded random weights and the ONNX codec.

    Built once per test session (the ONNX export takes ~20 s on a busy 2-core machine); treat it
    as read-only: copy it (`shutil.copytree`) before changing anything in it.
    """
    from models.bundle import create_random_model_dir

    return create_random_model_dir(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)
