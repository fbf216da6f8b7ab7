"""Checks of the Dockerfile, the pinned requirements and the shipped model folder."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.checks.facts import (
    BUILD_TOOLS,
    CPU_TARGET,
    GPU_TARGET,
    REQUIREMENTS_DIR,
    env_problems,
    flag_value,
    settings_default,
    url_port_and_path,
)
from tests.deploy.dockerfile import (
    Stage,
    is_ignored,
    parse_dockerfile,
    read_dockerignore,
    stage_named,
)


def _requirements(path: Path) -> dict[str, str]:
    """name -> exact version pinned (`name==version`) in a requirements file."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        exact = [s for s in req.specifier if s.operator == "=="]
        pins[canonicalize_name(req.name)] = exact[0].version if len(exact) == 1 else ""
    return pins


def _pyproject(root: Path) -> dict[str, Any]:
    return tomllib.loads((root / "pyproject.toml").read_text())


def requirements_problems(root: Path) -> list[str]:
    """deploy/requirements pins: exact, covering and satisfying pyproject.toml, CUDA-consistent."""
    folder = root / REQUIREMENTS_DIR
    problems: list[str] = []
    files = {name: folder / f"{name}.txt" for name in ("common", "cpu", "torch-cpu", "gpu")}
    for path in files.values():
        if not path.is_file():
            return [f"{path.relative_to(root)} is missing"]
    pins = {name: _requirements(path) for name, path in files.items()}
    for name, file_pins in pins.items():
        for package, version in file_pins.items():
            if not version:
                problems.append(f"{REQUIREMENTS_DIR}/{name}.txt: {package} is not pinned with ==")
    project = _pyproject(root)["project"]
    images = {
        "cpu": {**pins["common"], **pins["cpu"], **pins["torch-cpu"]},
        "gpu": {**pins["common"], **pins["gpu"]},
    }
    requirements = [Requirement(r) for r in project["dependencies"]]
    gpu_extra = [Requirement(r) for r in project["optional-dependencies"].get("gpu", [])]
    for image, installed in images.items():
        wanted = requirements + (gpu_extra if image == "gpu" else [])
        for req in wanted:
            name = canonicalize_name(req.name)
            if image == "gpu" and name == "onnxruntime":
                name = "onnxruntime-gpu"  # same module, CUDA build; see the Dockerfile
            if name not in installed:
                problems.append(f"{image} image: {req.name} (pyproject.toml) has no pin")
                continue
            version = Version(installed[name]) if installed[name] else None
            if version is not None and not req.specifier.contains(version, prereleases=True):
                problems.append(
                    f"{image} image: {name}=={version} does not satisfy pyproject's {req}"
                )
    cpu_torch, gpu_torch = pins["torch-cpu"].get("torch", ""), pins["gpu"].get("torch", "")
    if Version(cpu_torch or "0").public != Version(gpu_torch or "0").public:
        problems.append(f"torch differs between images: cpu {cpu_torch}, gpu {gpu_torch}")
    if cpu_torch and Version(cpu_torch).local != "cpu":
        problems.append(f"torch-cpu.txt: torch=={cpu_torch} is not the +cpu build")
    return problems


def dockerfile_problems(root: Path, routes: set[str]) -> list[str]:
    """Stages, COPY sources, users, health checks, ports, env names and CUDA versions."""
    dockerfile = root / "Dockerfile"
    stages = parse_dockerfile(dockerfile)
    ignore = read_dockerignore(root / ".dockerignore")
    problems: list[str] = []
    names = [stage.name for stage in stages]
    port = settings_default("port")
    for target in (CPU_TARGET, GPU_TARGET):
        if target not in names:
            problems.append(f"Dockerfile: no stage named {target!r}")
    for stage in stages:
        where = f"Dockerfile stage {stage.name or stage.index}"
        if ":" not in stage.base.split("/")[-1] or stage.base.endswith(":latest"):
            problems.append(f"{where}: base image {stage.base!r} has no fixed tag")
        for ins in stage.all("COPY") + stage.all("ADD"):
            words = ins.words()
            sources, _dest = words[:-1], words[-1]
            source_stage = ins.flags.get("from")
            if source_stage is not None:
                if source_stage not in names[: stage.index]:
                    problems.append(f"{where}: COPY --from={source_stage} names no earlier stage")
                continue
            for source in sources:
                if re.match(r"^[a-z]+://", source):
                    problems.append(f"{where}: {ins.keyword} of a URL ({source})")
                    continue
                if not (root / source).exists():
                    problems.append(f"{where}: COPY source {source} does not exist")
                elif is_ignored(source, ignore):
                    problems.append(f"{where}: COPY source {source} is excluded by .dockerignore")
        stage_env = stage.env()
        for ins in stage.all("RUN"):
            for command in re.split(r"&&|;|\|\|", ins.args):
                words = command.split()
                if "pip" in words and "install" in words:
                    cache_off = "--no-cache-dir" in words or stage_env.get("PIP_NO_CACHE_DIR")
                    if not cache_off:
                        problems.append(f"{where} line {ins.line}: pip install keeps its cache")
                    for flag in ("-r", "--requirement", "-c", "--constraint"):
                        for index, word in enumerate(words[:-1]):
                            if word == flag and not (root / words[index + 1]).is_file():
                                problems.append(f"{where}: {words[index + 1]} does not exist")
        problems += env_problems(stage_env, where)
    for target in (CPU_TARGET, GPU_TARGET):
        stage = stage_named(stages, target)
        if stage is None:
            continue
        problems += _final_stage_problems(stage, target, port, routes)
    problems += _cuda_problems(root, stages)
    return problems


def _final_stage_problems(stage: Stage, target: str, port: int, routes: set[str]) -> list[str]:
    where = f"Dockerfile stage {target}"
    problems = []
    user = stage.last("USER")
    if user is None or user.args.split(":")[0] in ("root", "0"):
        problems.append(f"{where}: runs as root (needs a non-root USER)")
    elif not user.args.split(":")[0].isdigit():
        problems.append(f"{where}: USER {user.args} is not numeric (runAsNonRoot cannot verify it)")
    healthcheck = stage.last("HEALTHCHECK")
    if healthcheck is None or healthcheck.args.strip().upper() == "NONE":
        problems.append(f"{where}: no HEALTHCHECK")
    for ins in stage.all("RUN"):
        words = re.split(r"[\s]+", ins.args)
        if "apt-get" in words and "install" in words:
            tools = [w for w in words if BUILD_TOOLS.match(w)]
            if tools:
                problems.append(f"{where}: installs build tools {tools}")
        if re.search(r"\bpip3? install\b", ins.args):
            problems.append(f"{where}: pip install in the final stage (copy the builder's venv)")
    entrypoint = stage.last("ENTRYPOINT")
    if entrypoint is None or "nowcast" not in entrypoint.words():
        problems.append(f"{where}: ENTRYPOINT does not run `nowcast`")
    cmd = stage.last("CMD")
    cmd_words = cmd.words() if cmd else []
    env = stage.env()
    expected_device = "cpu" if target == CPU_TARGET else "cuda"
    if env.get("NOWCAST_DEVICE") != expected_device:
        problems.append(f"{where}: NOWCAST_DEVICE should be {expected_device}")
    if target == CPU_TARGET:
        exposed = {int(word.split("/")[0]) for ins in stage.all("EXPOSE") for word in ins.words()}
        if exposed != {port}:
            problems.append(f"{where}: EXPOSE {sorted(exposed)} != the service port {port}")
        if cmd_words[:1] != ["serve"]:
            problems.append(f"{where}: CMD should start the API (`serve`), is {cmd_words}")
        cmd_port = flag_value(cmd_words, "--port")
        if cmd_port is not None and int(cmd_port) != port:
            problems.append(f"{where}: CMD --port {cmd_port} != the service port {port}")
        if flag_value(cmd_words, "--workers") != "0":
            problems.append(f"{where}: the API image should run `serve --workers 0`")
        if env.get("NOWCAST_PORT") not in (None, str(port)):
            problems.append(f"{where}: NOWCAST_PORT={env['NOWCAST_PORT']} != {port}")
        if healthcheck is not None:
            hc_port, hc_path = url_port_and_path(healthcheck.args)
            if hc_port != port:
                problems.append(f"{where}: HEALTHCHECK probes port {hc_port}, not {port}")
            if hc_path not in routes:
                problems.append(f"{where}: HEALTHCHECK path {hc_path} is no route of the API")
    else:
        if cmd_words != ["worker"]:
            problems.append(f"{where}: CMD should be `worker`, is {cmd_words}")
        if healthcheck is not None and "--check" not in healthcheck.args:
            problems.append(f"{where}: HEALTHCHECK should be `nowcast worker --check`")
    return problems


def _cuda_problems(root: Path, stages: list[Stage]) -> list[str]:
    """The GPU stage's CUDA base and the CUDA/cuDNN of the pinned wheels must agree."""
    gpu = stage_named(stages, GPU_TARGET)
    gpu_file = root / REQUIREMENTS_DIR / "gpu.txt"
    if gpu is None or not gpu_file.is_file():
        return []
    match = re.match(r"^(?:nvcr\.io/)?nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-", gpu.base)
    if match is None:
        return [f"Dockerfile stage gpu: base {gpu.base!r} is not an nvidia/cuda runtime image"]
    base_cuda = (int(match.group(1)), int(match.group(2)))
    pins = _requirements(gpu_file)
    problems = []
    toolkit = pins.get("cuda-toolkit")
    if toolkit is None:
        problems.append("gpu.txt: no cuda-toolkit pin (torch's CUDA version)")
    elif Version(toolkit).release[:2] != base_cuda:
        problems.append(f"gpu.txt: CUDA {toolkit} (torch) != base image CUDA {base_cuda}")
    cudnn = [name for name in pins if name.startswith("nvidia-cudnn-cu")]
    if [name.removeprefix("nvidia-cudnn-cu") for name in cudnn] != [str(base_cuda[0])]:
        problems.append(f"gpu.txt: cuDNN wheels {cudnn} do not match CUDA {base_cuda[0]}")
    for name, version in pins.items():
        if name.startswith("nvidia-cuda-") and Version(version).release[:2] != base_cuda:
            problems.append(f"gpu.txt: {name}=={version} is not CUDA {base_cuda}")
    return problems


def shipped_model_problems(root: Path) -> list[str] | None:
    """The shipped model reaches the image: in the build context, in the wheel, real files.

    Returns None when the repository has no shipped model yet (nothing to check).
    """
    from service.settings import SHIPPED_MODEL_DIR

    relative = SHIPPED_MODEL_DIR.relative_to(Path(__file__).resolve().parents[3])
    folder = root / relative
    if not (folder / "model.yaml").is_file():
        return None
    problems = []
    ignore = read_dockerignore(root / ".dockerignore")
    package_data = _pyproject(root)["tool"]["setuptools"]["package-data"].get("models", [])
    packaged = {p for pattern in package_data for p in (root / "models").glob(pattern)}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        if is_ignored(name, ignore):
            problems.append(f"{name}: excluded from the build context by .dockerignore")
        if path not in packaged:
            problems.append(f"{name}: not in pyproject's package-data, so not in the image")
        with path.open("rb") as handle:
            if handle.read(40).startswith(b"version https://git-lfs"):
                problems.append(f"{name}: a Git LFS pointer, not the weights")
    return problems
