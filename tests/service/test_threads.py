"""The thread budget (service.threads): the workers' compute threads add up to the cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.onnx_codec import OnnxCodecSession
from service import threads
from service.queue.store import create_store
from service.settings import Settings
from service.worker import Worker


@pytest.mark.parametrize(
    ("workers", "cores", "expected"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (3, 16, 5)]
)
def test_threads_per_worker_share_the_cores(workers: int, cores: int, expected: int) -> None:
    assert threads.threads_per_worker(workers, cores) == expected


@pytest.mark.parametrize(
    ("cpu_max", "expected"), [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000", 1)]
)
def test_a_cgroup_quota_caps_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, expected: int | None
) -> None:
    affinity = threads.available_cores()
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", limit)
    assert threads.available_cores() == (affinity if expected is None else min(affinity, expected))


def test_a_loaded_worker_sizes_torch_and_onnx_runtime(tiny_model_dir: Path) -> None:
    before = torch.get_num_threads()
    settings = Settings(worker_threads=1)
    worker = Worker(settings, create_store(settings), tiny_model_dir)
    try:
        worker.load()
        assert torch.get_num_threads() == 1
        for codec in (worker.pipeline.encoder, worker.pipeline.decoder):
            if isinstance(codec, OnnxCodecSession):
                options = codec.session.get_session_options()
                assert options.intra_op_num_threads == 1
    finally:
        torch.set_num_threads(before)
