"""Shared training machinery: devices, seeded init, EMA, checkpoints, CSV log, progress, LR.

A checkpoint (`<run>/checkpoint.pt`) holds everything needed to continue a stage exactly:
model and optimiser states, EMA weights, the step counter and the states of the stage's
random generators (torch and NumPy). It is written atomically (temp file + rename), so a run
killed mid-write keeps its previous checkpoint.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from models.config import ModelConfig, get_config

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
CPU_THREADS = 2  # the training machines have 2 cores
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def select_device(name: str, threads: int = CPU_THREADS) -> torch.device:
    """`cpu` (with `threads` intra-op threads) or `cuda`; a missing GPU is a clear error.

    On a 2-core machine shared with other busy processes one thread can be ~10x faster than
    two (measured: VAE step 1.1 s vs 13 s), because OpenMP threads wait for each other.
    """
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
        return torch.device("cuda")
    if name != "cpu":
        raise SystemExit(f"--device must be cpu or cuda, got {name!r}")
    torch.set_num_threads(threads)
    return torch.device("cpu")


def stage_config(preset: str, state: dict[str, Any] | None) -> ModelConfig:
    """The config a stage trains: a resumed run keeps the one stored in its checkpoint (the
    preset may have changed since), a new run takes the preset."""
    config = get_config(preset)
    if state is None:
        return config
    stored = ModelConfig.from_dict(state["config"])
    if stored.replace(latent_scale=config.latent_scale) != config:
        print(f"note: using the checkpoint's config, which differs from preset {preset!r}")
    return stored


def apply_overrides(config: ModelConfig, overrides: list[str]) -> ModelConfig:
    """`config` with `section.field=value` overrides (value parsed as YAML; lists -> tuples),
    e.g. `denoiser.base_units=96`; the result is stored with the run, so it rebuilds exactly."""
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected section.field=value")
        *sections, name = key.strip().split(".")
        target = data
        for section in sections:
            if not isinstance(target.get(section), dict):
                raise SystemExit(f"--set {item!r}: no config section {section!r}")
            target = target[section]
        if name not in target:
            raise SystemExit(f"--set {item!r}: no config field {key!r}")
        target[name] = yaml.safe_load(raw)
    return ModelConfig.from_dict(data)


def seeded_init(seed: int, build: Callable[[], ModuleT]) -> ModuleT:
    """Build a module whose initial weights depend only on `seed`.

    `nn.Module` initialisers draw from torch's default generator; the draw happens inside
    `fork_rng`, so the global state is restored afterwards and nothing else is seeded.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers.

    shadow <- decay * shadow + (1 - decay) * current, with the decay warmed up as
    min(decay, (1 + n) / (10 + n)) over the first updates so early weights fade quickly.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                self.shadow[key].copy_(value)

    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged weights into `module`."""
        module.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.updates = state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


def rng_state(generator: torch.Generator, rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": generator.get_state(), "numpy": rng.bit_generator.state}


def restore_rng(
    state: dict[str, Any], generator: torch.Generator, rng: np.random.Generator
) -> None:
    generator.set_state(state["torch"])
    rng.bit_generator.state = state["numpy"]


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` to `<run_dir>/checkpoint.pt` atomically; returns the path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The state written by `save_checkpoint` (tensors mapped to `device`)."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise SystemExit(f"no checkpoint at {path}; train the stage first (or drop --resume)")
    # our own file: it holds NumPy RNG state dicts next to the tensors
    return torch.load(path, map_location=device, weights_only=False)


class CSVLog:
    """Append-only CSV of per-step metrics (`<run>/log.csv`).

    `resume_step`: rows logged after that step (by a run killed after its last checkpoint)
    are dropped first, so a resumed run's log has each step once.
    """

    def __init__(self, path: Path, fields: list[str], resume_step: int | None = None) -> None:
        self.path = path
        self.fields = fields
        if resume_step is not None and path.exists():
            with path.open(newline="") as file:
                rows = [r for r in csv.DictReader(file) if int(r["step"]) <= resume_step]
            with path.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        new = not path.exists() or path.stat().st_size == 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
        if new:
            self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    """tqdm bar (loss in the postfix, it/s and ETA from tqdm); sparse updates when logging to a
    file so `nohup` logs stay small."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        mininterval=0.5 if interactive else 30.0,
        dynamic_ncols=interactive,
        ascii=not interactive,
    )


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor * base_lr` at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimiser: torch.optim.Optimizer, lr: float) -> None:
    for group in optimiser.param_groups:
        group["lr"] = lr


class Deadline:
    """Wall-clock budget: `expired()` after `max_minutes` (None = never)."""

    def __init__(self, max_minutes: float | None) -> None:
        self.end = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes

    def expired(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end


class Every:
    """True once every `seconds` of wall time (for periodic checkpoints)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.monotonic()

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode and disable autograd; restore their modes afterwards."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
