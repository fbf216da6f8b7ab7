"""Static cross-checks of the deployment files against each other and against the service's code.

Each `check_*` function reads the files under a repository root and returns a list of problems
(empty = fine), so the tests can run it on the real tree and on a deliberately broken copy. The
service's own facts come from its code: `service.settings.Settings` (env names, types, defaults,
the port), `service.queue.constants` (stream and consumer group) and the FastAPI app's routes.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from pydantic import TypeAdapter, ValidationError

from service.queue.constants import CONSUMER_GROUP, RedisKeys
from service.settings import Settings
from tests.deploy import compose_file, kustomize_lite
from tests.deploy.dockerfile import (
    Stage,
    is_ignored,
    parse_dockerfile,
    read_dockerignore,
    stage_named,
)

ENV_PREFIX = "NOWCAST_"
CPU_TARGET, GPU_TARGET = "cpu", "gpu"
COMPOSE_FILE, COMPOSE_CPU_OVERRIDE = "docker-compose.yml", "docker-compose.cpu.yml"
K8S_BASE, K8S_GPU_OVERLAY = "deploy/k8s/base", "deploy/k8s/overlays/gpu"
REQUIREMENTS_DIR = "deploy/requirements"
# seconds a worker needs after its drain ends: release the jobs (next sampler step), close, exit
DRAIN_MARGIN_S = 30
# oldest and newest Kubernetes versions the manifests are validated against
KUBERNETES_VERSIONS = ("1.29", "1.37")
# packages that must never be in a final image stage (compilers, VCS, headers)
BUILD_TOOLS = re.compile(r"^(gcc|g\+\+|clang|make|cmake|build-essential|git|.*-dev)(=.*)?$")


# --- the service's own facts ------------------------------------------------------------------


def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = Settings.model_fields[name]
    annotation = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    return TypeAdapter(annotation)


def settings_default(name: str) -> Any:
    field = Settings.model_fields[name]
    return field.get_default(call_default_factory=True)


def env_problems(env: dict[str, Any], where: str) -> list[str]:
    """NOWCAST_* names that are no Settings field, and values the field would reject."""
    problems = []
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in Settings.model_fields:
            problems.append(f"{where}: {key} is not a field of service.settings.Settings")
            continue
        try:
            _field_adapter(name).validate_python(value)
        except ValidationError as exc:
            problems.append(f"{where}: {key}={value!r} is invalid: {exc.errors()[0]['msg']}")
    return problems


def effective_setting(env: dict[str, Any], name: str) -> Any:
    """The value a process with environment `env` ends up with for Settings field `name`."""
    key = ENV_PREFIX + name.upper()
    if key in env and env[key] is not None:
        try:
            return _field_adapter(name).validate_python(env[key])
        except ValidationError:
            return None  # reported by env_problems
    return settings_default(name)


def _duration_s(text: str | int | float) -> float:
    """Compose durations ("10m", "1m30s", "90s", 45) in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _url_port_and_path(text: str) -> tuple[int | None, str | None]:
    """Port and path of the first http://127.0.0.1|localhost URL in a health-check command."""
    match = re.search(r"https?://(?:127\.0\.0\.1|localhost)(?::(\d+))?(/[^'\"\s]*)?", text)
    if match is None:
        return None, None
    return (int(match.group(1)) if match.group(1) else 80), match.group(2) or "/"


def _flag_value(words: list[str], flag: str) -> str | None:
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def _redis_conf(text: str) -> dict[str, str]:
    """redis.conf directives (last one wins), lower-case names."""
    directives: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            directives[name.lower()] = value.strip()
    return directives


def redis_conf_problems(text: str, where: str) -> list[str]:
    conf = _redis_conf(text)
    problems = []
    if conf.get("appendonly") != "yes":
        problems.append(f"{where}: Redis AOF is off (need `appendonly yes`)")
    if conf.get("maxmemory-policy") != "noeviction":
        problems.append(f"{where}: maxmemory-policy is not noeviction (evictions lose jobs)")
    return problems


def _image_name(image: str) -> str:
    """The image reference without tag or digest."""
    return kustomize_lite._split_image(image)[0]


def _redis_major(image: str) -> int | None:
    match = re.match(r"^(?:docker\.io/)?(?:library/)?redis:(\d+)", image)
    return int(match.group(1)) if match else None


# --- Dockerfile ---------------------------------------------------------------------------------


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
        cmd_port = _flag_value(cmd_words, "--port")
        if cmd_port is not None and int(cmd_port) != port:
            problems.append(f"{where}: CMD --port {cmd_port} != the service port {port}")
        if _flag_value(cmd_words, "--workers") != "0":
            problems.append(f"{where}: the API image should run `serve --workers 0`")
        if env.get("NOWCAST_PORT") not in (None, str(port)):
            problems.append(f"{where}: NOWCAST_PORT={env['NOWCAST_PORT']} != {port}")
        if healthcheck is not None:
            hc_port, hc_path = _url_port_and_path(healthcheck.args)
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

    relative = SHIPPED_MODEL_DIR.relative_to(Path(__file__).resolve().parents[2])
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


# --- docker compose -----------------------------------------------------------------------------


def compose_variants(root: Path) -> dict[str, list[Path]]:
    """The two ways to run the stack: GPU host (default file) and CPU host (+ override)."""
    return {
        GPU_TARGET: [root / COMPOSE_FILE],
        CPU_TARGET: [root / COMPOSE_FILE, root / COMPOSE_CPU_OVERRIDE],
    }


def compose_schema_problems(root: Path) -> list[str]:
    """Each compose file, and each merged variant, against the compose-spec schema."""
    schema = compose_file.compose_schema()
    problems = []
    for name in (COMPOSE_FILE, COMPOSE_CPU_OVERRIDE):
        missing: list[str] = []
        document = compose_file.strip_tags(
            compose_file.interpolate(compose_file.load_compose_yaml(root / name), {}, missing)
        )
        problems += [f"{name}: {error}" for error in compose_file.schema_errors(document, schema)]
        problems += [f"{name}: ${{{var}}} has no default" for var in missing]
    for variant, paths in compose_variants(root).items():
        config, _ = compose_file.effective_config(paths)
        errors = compose_file.schema_errors(config, schema)
        problems += [f"compose ({variant} variant): {error}" for error in errors]
    return problems


def compose_problems(root: Path, routes: set[str]) -> list[str]:
    """Redis durability, API port/health/secrets, worker GPU/scaling/drain, env, targets."""
    stages = parse_dockerfile(root / "Dockerfile")
    stage_names = {stage.name for stage in stages}
    port = settings_default("port")
    problems: list[str] = []
    images_by_target: dict[str, set[str]] = {}
    for variant, paths in compose_variants(root).items():
        config, _ = compose_file.effective_config(paths)
        where = f"compose ({variant} variant)"
        services = config.get("services", {})
        for required in ("redis", "api", "worker"):
            if required not in services:
                problems.append(f"{where}: no {required!r} service")
        if any(required not in services for required in ("redis", "api", "worker")):
            continue
        for name, service in services.items():
            if service.get("restart") not in ("always", "unless-stopped", "on-failure"):
                problems.append(f"{where}: service {name} has no restart policy")
            build = service.get("build")
            if isinstance(build, dict) and build.get("target") not in stage_names:
                problems.append(f"{where}: {name} builds target {build.get('target')!r}, no stage")
            if isinstance(build, dict):
                images_by_target.setdefault(build.get("target"), set()).add(
                    _image_name(service.get("image", ""))
                )
        redis_service, api, worker = services["redis"], services["api"], services["worker"]
        # Redis: durable, non-evicting, on a named volume, recent enough for the lag scaler
        conf_text, conf_where = _compose_redis_conf(root, config, redis_service)
        if conf_text is None:
            problems.append(f"{where}: redis runs without our redis.conf ({conf_where})")
            conf = {}
        else:
            problems += redis_conf_problems(conf_text, conf_where)
            conf = _redis_conf(conf_text)
        data_dir = conf.get("dir", "/data")
        volumes = [v for v in redis_service.get("volumes", []) if isinstance(v, str)]
        named = [v.split(":")[0] for v in volumes if v.split(":")[1:2] == [data_dir]]
        if not named or named[0] not in (config.get("volumes") or {}):
            problems.append(f"{where}: redis {data_dir} is not on a named volume")
        major = _redis_major(redis_service.get("image", ""))
        if major is None or major < 7:
            problems.append(f"{where}: redis image must be redis:7+ (consumer-group lag)")
        redis_port = int(conf.get("port", 6379))
        # environment of the API and the workers
        api_env = api.get("environment") or {}
        worker_env = worker.get("environment") or {}
        problems += env_problems(api_env, f"{where} api")
        problems += env_problems(worker_env, f"{where} worker")
        for service_name, env in (("api", api_env), ("worker", worker_env)):
            url = env.get("NOWCAST_REDIS_URL")
            if not url:
                problems.append(f"{where}: {service_name} has no NOWCAST_REDIS_URL")
                continue
            parts = urlsplit(url)
            if parts.hostname != "redis" or (parts.port or 6379) != redis_port:
                problems.append(
                    f"{where}: {service_name} NOWCAST_REDIS_URL {url} is not the redis service "
                    f"at port {redis_port}"
                )
        for name in ("redis_url", "redis_key_prefix"):
            if effective_setting(api_env, name) != effective_setting(worker_env, name):
                problems.append(f"{where}: api and worker disagree on NOWCAST_{name.upper()}")
        for service_name, service in (("api", api), ("worker", worker)):
            condition = (service.get("depends_on") or {}).get("redis", {})
            if not isinstance(condition, dict) or condition.get("condition") != "service_healthy":
                problems.append(f"{where}: {service_name} does not wait for a healthy redis")
        problems += _compose_api_problems(where, config, api, api_env, port, routes)
        problems += _compose_worker_problems(where, variant, worker, worker_env)
    for target, names in images_by_target.items():
        if len(names) > 1:
            problems.append(f"compose: target {target} is tagged as several images {names}")
    cpu_images, gpu_images = images_by_target.get(CPU_TARGET), images_by_target.get(GPU_TARGET)
    if cpu_images and gpu_images and cpu_images & gpu_images:
        problems.append(f"compose: the CPU and GPU targets share an image name {cpu_images}")
    return problems


def _compose_redis_conf(
    root: Path, config: dict[str, Any], redis_service: dict[str, Any]
) -> tuple[str | None, str]:
    """The redis.conf the redis service starts with (through `configs`), and where it is."""
    command = redis_service.get("command") or []
    words = shlex.split(command) if isinstance(command, str) else list(command)
    conf_args = [word for word in words[1:] if word.endswith(".conf")]
    if not conf_args:
        return None, "no config file on the redis-server command line"
    for entry in redis_service.get("configs", []):
        if isinstance(entry, dict) and entry.get("target") == conf_args[0]:
            source = (config.get("configs") or {}).get(entry["source"], {})
            path = root / source.get("file", "")
            if path.is_file():
                return path.read_text(), str(path.relative_to(root))
            return None, f"config file {source.get('file')} does not exist"
    return None, f"{conf_args[0]} is not provided through `configs`"


def _compose_api_problems(
    where: str,
    config: dict[str, Any],
    api: dict[str, Any],
    env: dict[str, Any],
    port: int,
    routes: set[str],
) -> list[str]:
    problems = []
    if (api.get("build") or {}).get("target") != CPU_TARGET:
        problems.append(f"{where}: api should build the {CPU_TARGET} target")
    command = api.get("command") or []
    if command[:1] != ["serve"] or _flag_value(command, "--workers") != "0":
        problems.append(f"{where}: api should run `serve --workers 0`, runs {command}")
    command_port = _flag_value(command, "--port")
    if command_port is not None and int(command_port) != port:
        problems.append(f"{where}: api command --port {command_port} != service port {port}")
    container_ports = []
    for entry in api.get("ports", []):
        if isinstance(entry, dict):
            container_ports.append(int(entry["target"]))
        else:
            container_ports.append(int(str(entry).split(":")[-1].split("/")[0]))
    if container_ports != [port]:
        problems.append(f"{where}: api publishes container ports {container_ports}, not {port}")
    test = (api.get("healthcheck") or {}).get("test") or []
    hc_port, hc_path = _url_port_and_path(" ".join(test) if isinstance(test, list) else test)
    if hc_port != port or hc_path not in routes:
        problems.append(f"{where}: api healthcheck probes :{hc_port}{hc_path}, no API route")
    keys_file = env.get("NOWCAST_API_KEYS_FILE")
    secrets = {}
    for entry in api.get("secrets", []):
        name = entry if isinstance(entry, str) else entry["source"]
        target = name if isinstance(entry, str) else entry.get("target", name)
        secrets[target if target.startswith("/") else f"/run/secrets/{target}"] = name
    if not keys_file:
        problems.append(f"{where}: api has no NOWCAST_API_KEYS_FILE (auth would be off)")
    elif keys_file not in secrets:
        problems.append(f"{where}: NOWCAST_API_KEYS_FILE {keys_file} is no mounted secret")
    elif secrets[keys_file] not in (config.get("secrets") or {}):
        problems.append(f"{where}: secret {secrets[keys_file]} is not declared")
    return problems


def _compose_worker_problems(
    where: str, variant: str, worker: dict[str, Any], env: dict[str, Any]
) -> list[str]:
    problems = []
    if "container_name" in worker or worker.get("ports"):
        problems.append(f"{where}: worker has a container_name or host ports (cannot --scale)")
    if (worker.get("build") or {}).get("target") != variant:
        problems.append(f"{where}: worker should build the {variant} target")
    if worker.get("command") != ["worker"]:
        problems.append(f"{where}: worker should run `worker`, runs {worker.get('command')}")
    devices = (((worker.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []
    gpu_reserved = any("gpu" in (device.get("capabilities") or []) for device in devices)
    if variant == GPU_TARGET and not gpu_reserved:
        problems.append(f"{where}: worker reserves no GPU (deploy.resources.reservations.devices)")
    if variant == CPU_TARGET and devices:
        problems.append(f"{where}: CPU worker still reserves devices {devices}")
    device = effective_setting(env, "device")
    expected = "cuda" if variant == GPU_TARGET else "cpu"
    if device != expected:
        problems.append(f"{where}: worker NOWCAST_DEVICE is {device}, should be {expected}")
    drain_s = effective_setting(env, "worker_drain_s")
    grace_s = _duration_s(worker.get("stop_grace_period", "10s"))
    if drain_s is not None and grace_s < drain_s + DRAIN_MARGIN_S:
        problems.append(
            f"{where}: worker stop_grace_period {grace_s:g}s <= drain {drain_s:g}s + margin"
        )
    test = (worker.get("healthcheck") or {}).get("test") or []
    if "--check" not in test:
        problems.append(f"{where}: worker healthcheck should be `nowcast worker --check`")
    return problems


# --- Kubernetes ---------------------------------------------------------------------------------


def k8s_builds(root: Path) -> dict[str, list[dict[str, Any]]]:
    """The manifests of the base (CPU workers) and the GPU overlay."""
    return {
        CPU_TARGET: kustomize_lite.build(root / K8S_BASE),
        GPU_TARGET: kustomize_lite.build(root / K8S_GPU_OVERLAY),
    }


@functools.lru_cache(maxsize=512)
def _kubernetes_schema_error(manifest_json: str, version: str) -> str | None:
    """kubernetes-validate's verdict on one manifest (strict: unknown fields fail); memoised,
    because it reloads the schema definitions on every call."""
    import kubernetes_validate

    manifest = json.loads(manifest_json)
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        return f"{kustomize_lite.key_of(manifest)} vs {version}: {path}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return exc.message
    return None


def k8s_schema_problems(root: Path) -> list[str]:
    """Built-in kinds against the Kubernetes OpenAPI schemas of the oldest and newest version."""
    problems = []
    for variant, manifests in k8s_builds(root).items():
        for manifest in manifests:
            if manifest["apiVersion"].startswith("keda.sh/"):
                continue  # no schema offline: scaled_object_problems checks it
            for version in KUBERNETES_VERSIONS:
                error = _kubernetes_schema_error(json.dumps(manifest, sort_keys=True), version)
                if error is not None:
                    problems.append(f"k8s ({variant}) {error}")
    return problems


def _find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    for manifest in manifests:
        if kustomize_lite.key_of(manifest) == (kind, name):
            return manifest
    return None


def _container_env(
    manifests: list[dict[str, Any]], container: dict[str, Any], where: str, problems: list[str]
) -> dict[str, Any]:
    """Environment of a container: envFrom ConfigMaps/Secrets, then env (which wins)."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = _find(manifests, "ConfigMap", source["configMapRef"]["name"])
        else:
            ref = _find(manifests, "Secret", source.get("secretRef", {}).get("name", ""))
        if ref is None:
            problems.append(f"{where}: envFrom names a missing {source}")
            continue
        env.update(ref.get("data", {}))
        env.update(ref.get("stringData", {}))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _resolve_port(container: dict[str, Any], port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    return None


def k8s_problems(root: Path, routes: set[str]) -> list[str]:
    """References, probes, ports, env, drain, GPU, Redis and images of the built manifests."""
    port = settings_default("port")
    problems: list[str] = []
    compose_images = _compose_images(root)
    for variant, manifests in k8s_builds(root).items():
        where = f"k8s ({variant})"
        workloads = [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]
        problems += _reference_problems(where, manifests, workloads)
        api = _find(manifests, "Deployment", "nowcast-api")
        worker = _find(manifests, "Deployment", "nowcast-worker")
        redis_set = _find(manifests, "StatefulSet", "nowcast-redis")
        if api is None or worker is None or redis_set is None:
            problems.append(
                f"{where}: needs Deployments nowcast-api, nowcast-worker and "
                "StatefulSet nowcast-redis"
            )
            continue
        redis_host, redis_port, redis_problems = _redis_problems(where, manifests, redis_set)
        problems += redis_problems
        api_container = api["spec"]["template"]["spec"]["containers"][0]
        worker_container = worker["spec"]["template"]["spec"]["containers"][0]
        api_env = _container_env(manifests, api_container, f"{where} api", problems)
        worker_env = _container_env(manifests, worker_container, f"{where} worker", problems)
        problems += env_problems(api_env, f"{where} api")
        problems += env_problems(worker_env, f"{where} worker")
        for name, env in (("api", api_env), ("worker", worker_env)):
            url = env.get("NOWCAST_REDIS_URL")
            if not url:
                problems.append(f"{where}: {name} has no NOWCAST_REDIS_URL")
                continue
            parts = urlsplit(url)
            if (parts.hostname or "").split(".")[0] != redis_host or (
                parts.port or 6379
            ) != redis_port:
                problems.append(
                    f"{where}: {name} NOWCAST_REDIS_URL {url} is not Service "
                    f"{redis_host}:{redis_port}"
                )
        for name in ("redis_url", "redis_key_prefix"):
            if effective_setting(api_env, name) != effective_setting(worker_env, name):
                problems.append(f"{where}: api and worker disagree on NOWCAST_{name.upper()}")
        problems += _k8s_api_problems(where, manifests, api, api_container, api_env, port, routes)
        problems += _k8s_worker_problems(where, variant, worker, worker_container, worker_env)
        problems += scaled_object_problems(where, manifests, worker_env, redis_host, redis_port)
        # the images are the ones compose builds (same names), and Redis is the same release
        expected = {
            "api": compose_images.get(CPU_TARGET),
            "worker": compose_images.get(variant),
            "redis": compose_images.get("redis"),
        }
        actual = {
            "api": api_container["image"],
            "worker": worker_container["image"],
            "redis": redis_set["spec"]["template"]["spec"]["containers"][0]["image"],
        }
        for name, image in actual.items():
            wanted = expected[name]
            if wanted is None:
                continue
            same = image == wanted if name == "redis" else _image_name(image) == wanted
            if not same:
                problems.append(f"{where}: {name} image {image} is not compose's {wanted}")
    return problems


def _compose_images(root: Path) -> dict[str, str]:
    """Image name per build target (tag dropped) and the full Redis image, from compose."""
    images: dict[str, str] = {}
    for _variant, paths in compose_variants(root).items():
        config, _ = compose_file.effective_config(paths)
        for name, service in config.get("services", {}).items():
            target = (service.get("build") or {}).get("target")
            if target and service.get("image"):
                images[target] = _image_name(service["image"])
            if name == "redis" and service.get("image"):
                images["redis"] = service["image"]
    return images


def _reference_problems(
    where: str, manifests: list[dict[str, Any]], workloads: list[dict[str, Any]]
) -> list[str]:
    """ConfigMap/Secret volumes exist; Services and PDBs select pods; selectors match templates."""
    problems = []
    for workload in workloads:
        name = workload["metadata"]["name"]
        template = workload["spec"]["template"]
        if not _labels_match(
            workload["spec"]["selector"]["matchLabels"], template["metadata"].get("labels", {})
        ):
            problems.append(f"{where}: {name}'s selector does not match its pod labels")
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume and not _find(
                manifests, "ConfigMap", volume["configMap"]["name"]
            ):
                problems.append(f"{where}: {name} mounts missing ConfigMap {volume['configMap']}")
            if "secret" in volume and not _find(
                manifests, "Secret", volume["secret"]["secretName"]
            ):
                problems.append(f"{where}: {name} mounts missing Secret {volume['secret']}")
        mounted = {
            mount["name"]
            for c in template["spec"]["containers"]
            for mount in c.get("volumeMounts", [])
        }
        declared = {v["name"] for v in template["spec"].get("volumes", [])} | {
            claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])
        }
        if mounted - declared:
            problems.append(f"{where}: {name} mounts undeclared volumes {mounted - declared}")
    pod_labels = [w["spec"]["template"]["metadata"].get("labels", {}) for w in workloads]
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        if manifest["kind"] == "Service":
            selector = manifest["spec"].get("selector", {})
            targets = [
                w
                for w in workloads
                if _labels_match(selector, w["spec"]["template"]["metadata"]["labels"])
            ]
            if not targets:
                problems.append(f"{where}: Service {name} selects no pods")
            for entry in manifest["spec"].get("ports", []):
                target_port = entry.get("targetPort", entry["port"])
                if targets and all(
                    _resolve_port(c, target_port) is None
                    for w in targets
                    for c in w["spec"]["template"]["spec"]["containers"]
                ):
                    problems.append(
                        f"{where}: Service {name} targetPort {target_port} is no container port"
                    )
        if manifest["kind"] == "PodDisruptionBudget":
            selector = manifest["spec"]["selector"]["matchLabels"]
            if not any(_labels_match(selector, labels) for labels in pod_labels):
                problems.append(f"{where}: PodDisruptionBudget {name} selects no pods")
    return problems


def _redis_problems(
    where: str, manifests: list[dict[str, Any]], redis_set: dict[str, Any]
) -> tuple[str, int, list[str]]:
    """(Service name, port, problems) of the in-cluster Redis."""
    problems = []
    spec = redis_set["spec"]
    container = spec["template"]["spec"]["containers"][0]
    service = _find(manifests, "Service", spec.get("serviceName", ""))
    if service is None:
        problems.append(f"{where}: Redis StatefulSet's serviceName has no Service")
        host, port = "", 0
    else:
        host = service["metadata"]["name"]
        port = int(service["spec"]["ports"][0]["port"])
    conf_mounts = [
        m
        for m in container.get("volumeMounts", [])
        if any(
            v["name"] == m["name"] and "configMap" in v
            for v in spec["template"]["spec"].get("volumes", [])
        )
    ]
    conf_args = [
        a for a in container.get("args", []) + container.get("command", []) if a.endswith(".conf")
    ]
    conf_text = None
    for mount in conf_mounts:
        volume = next(v for v in spec["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        config_map = _find(manifests, "ConfigMap", volume["configMap"]["name"]) or {}
        for key, text in config_map.get("data", {}).items():
            if conf_args and conf_args[0] == f"{mount['mountPath'].rstrip('/')}/{key}":
                conf_text = text
    if conf_text is None:
        problems.append(f"{where}: redis does not start with a redis.conf from a ConfigMap")
        return host, port, problems
    problems += redis_conf_problems(conf_text, f"{where} redis.conf")
    data_dir = _redis_conf(conf_text).get("dir", "/data")
    claims = {claim["metadata"]["name"] for claim in spec.get("volumeClaimTemplates", [])}
    if not any(
        m["mountPath"] == data_dir and m["name"] in claims
        for m in container.get("volumeMounts", [])
    ):
        problems.append(f"{where}: redis {data_dir} is not on a PersistentVolumeClaim")
    conf_port = int(_redis_conf(conf_text).get("port", 6379))
    if (
        service is not None
        and _resolve_port(container, service["spec"]["ports"][0].get("targetPort", port))
        != conf_port
    ):
        problems.append(f"{where}: Redis Service does not reach redis.conf's port {conf_port}")
    major = _redis_major(container["image"])
    if major is None or major < 7:
        problems.append(f"{where}: redis image must be redis:7+ (consumer-group lag)")
    return host, port, problems


def _probe_problems(
    where: str, container: dict[str, Any], probe_name: str, port: int, routes: set[str]
) -> list[str]:
    probe = container.get(probe_name)
    if probe is None:
        return [f"{where}: no {probe_name}"]
    http = probe.get("httpGet")
    if http is None:
        return [f"{where}: {probe_name} is not an HTTP probe"]
    problems = []
    if http.get("path") not in routes:
        problems.append(f"{where}: {probe_name} path {http.get('path')} is no API route")
    if _resolve_port(container, http.get("port")) != port:
        problems.append(f"{where}: {probe_name} port {http.get('port')} is not {port}")
    return problems


def _k8s_api_problems(
    where: str,
    manifests: list[dict[str, Any]],
    api: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, Any],
    port: int,
    routes: set[str],
) -> list[str]:
    where = f"{where} api"
    problems = []
    args = container.get("args", [])
    if args[:1] != ["serve"] or _flag_value(args, "--workers") != "0":
        problems.append(f"{where}: should run `serve --workers 0`, runs {args}")
    arg_port = _flag_value(args, "--port")
    if arg_port is not None and int(arg_port) != port:
        problems.append(f"{where}: --port {arg_port} != service port {port}")
    if [int(p["containerPort"]) for p in container.get("ports", [])] != [port]:
        problems.append(f"{where}: containerPort is not the service port {port}")
    problems += _probe_problems(where, container, "livenessProbe", port, routes)
    problems += _probe_problems(where, container, "readinessProbe", port, routes)
    if (
        container["readinessProbe"]["httpGet"]["path"]
        == container["livenessProbe"]["httpGet"]["path"]
        if "readinessProbe" in container and "livenessProbe" in container
        else False
    ):
        problems.append(f"{where}: readiness and liveness probe the same path")
    annotations = api["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true" and (
        annotations.get("prometheus.io/port") != str(port)
        or annotations.get("prometheus.io/path") not in routes
    ):
        problems.append(f"{where}: Prometheus annotations do not point at the /metrics route")
    keys_file = env.get("NOWCAST_API_KEYS_FILE")
    if not keys_file:
        problems.append(f"{where}: no NOWCAST_API_KEYS_FILE (auth would be off)")
        return problems
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"].get("volumes", [])}
    found = False
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        prefix = mount["mountPath"].rstrip("/") + "/"
        if "secret" in volume and keys_file.startswith(prefix):
            secret = _find(manifests, "Secret", volume["secret"]["secretName"]) or {}
            keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
            found = keys_file[len(prefix) :] in keys
    if not found:
        problems.append(f"{where}: NOWCAST_API_KEYS_FILE {keys_file} is no key of a mounted Secret")
    return problems


def _k8s_worker_problems(
    where: str,
    variant: str,
    worker: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, Any],
) -> list[str]:
    where = f"{where} worker"
    problems = []
    pod = worker["spec"]["template"]["spec"]
    if "replicas" in worker["spec"]:
        problems.append(f"{where}: sets replicas, which fights the KEDA ScaledObject")
    if container.get("args") != ["worker"]:
        problems.append(f"{where}: should run `worker`, runs {container.get('args')}")
    pre_stop = " ".join(
        container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    )
    if "kill -TERM 1" not in pre_stop or "kill -0 1" not in pre_stop:
        problems.append(f"{where}: preStop must SIGTERM the worker and wait for it to exit")
    drain_s = effective_setting(env, "worker_drain_s")
    grace_s = pod.get("terminationGracePeriodSeconds", 30)
    if drain_s is not None and grace_s < drain_s + DRAIN_MARGIN_S:
        problems.append(
            f"{where}: terminationGracePeriodSeconds {grace_s} <= drain {drain_s:g}"
            f" s + {DRAIN_MARGIN_S} s margin"
        )
    liveness = " ".join(container.get("livenessProbe", {}).get("exec", {}).get("command", []))
    if "--check" not in liveness:
        problems.append(f"{where}: livenessProbe should run `nowcast worker --check`")
    device = effective_setting(env, "device")
    limits = container.get("resources", {}).get("limits", {})
    gpus = int(limits.get("nvidia.com/gpu", 0))
    requested = container.get("resources", {}).get("requests", {}).get("nvidia.com/gpu")
    if requested is not None and int(requested) != gpus:
        problems.append(f"{where}: nvidia.com/gpu request {requested} != limit {gpus}")
    if variant == GPU_TARGET:
        if device != "cuda":
            problems.append(f"{where}: NOWCAST_DEVICE is {device}, should be cuda")
        if gpus < 1:
            problems.append(f"{where}: no nvidia.com/gpu limit")
    else:
        if device != "cpu":
            problems.append(f"{where}: NOWCAST_DEVICE is {device}, should be cpu")
        if gpus:
            problems.append(f"{where}: CPU base requests nvidia.com/gpu")
    return problems


# KEDA's ScaledObject (keda.sh/v1alpha1) and redis-streams trigger fields, from KEDA's docs
SCALED_OBJECT_SPEC_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
REDIS_STREAMS_FIELDS = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
}
COUNT_FIELDS = ("pendingEntriesCount", "streamLength", "lagCount", "activationLagCount")


def scaled_object_problems(
    where: str,
    manifests: list[dict[str, Any]],
    worker_env: dict[str, Any],
    redis_host: str,
    redis_port: int,
) -> list[str]:
    """The KEDA ScaledObject: target, bounds, and redis-streams triggers on the real stream."""
    scaled = [m for m in manifests if m["kind"] == "ScaledObject"]
    if len(scaled) != 1:
        return [f"{where}: expected one KEDA ScaledObject, found {len(scaled)}"]
    manifest = scaled[0]
    spec = manifest["spec"]
    problems = []
    if manifest["apiVersion"] != "keda.sh/v1alpha1":
        problems.append(f"{where}: ScaledObject apiVersion {manifest['apiVersion']}")
    unknown = set(spec) - SCALED_OBJECT_SPEC_FIELDS
    if unknown:
        problems.append(f"{where}: ScaledObject has unknown fields {sorted(unknown)}")
    target = spec.get("scaleTargetRef", {})
    if target.get("kind", "Deployment") != "Deployment" or target.get("name") != "nowcast-worker":
        problems.append(f"{where}: ScaledObject does not target Deployment nowcast-worker")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
        problems.append(
            f"{where}: replica bounds {low}..{high}: need 1 <= min <= max "
            "(/readyz needs a live worker, so never scale to zero)"
        )
    prefix = effective_setting(worker_env, "redis_key_prefix")
    stream = RedisKeys(prefix=prefix).stream
    namespace = manifest["metadata"].get("namespace")
    triggers = spec.get("triggers", [])
    if not triggers:
        problems.append(f"{where}: ScaledObject has no triggers")
    kinds_seen = set()
    for index, trigger in enumerate(triggers):
        tw = f"{where} ScaledObject trigger {trigger.get('name', index)}"
        if trigger.get("type") != "redis-streams":
            problems.append(f"{tw}: type {trigger.get('type')} is not redis-streams")
            continue
        metadata = trigger.get("metadata", {})
        unknown = set(metadata) - REDIS_STREAMS_FIELDS
        if unknown:
            problems.append(f"{tw}: unknown redis-streams fields {sorted(unknown)}")
        not_text = [key for key, value in metadata.items() if not isinstance(value, str)]
        if not_text:
            problems.append(f"{tw}: metadata values must be strings: {not_text}")
        if metadata.get("stream") != stream:
            problems.append(f"{tw}: stream {metadata.get('stream')!r} != the job stream {stream!r}")
        if metadata.get("consumerGroup") != CONSUMER_GROUP:
            problems.append(
                f"{tw}: consumerGroup {metadata.get('consumerGroup')!r} != {CONSUMER_GROUP!r}"
            )
        for key in COUNT_FIELDS:
            if key in metadata and not str(metadata[key]).isdigit():
                problems.append(f"{tw}: {key} {metadata[key]!r} is not a count")
        if "lagCount" in metadata:
            kinds_seen.add("lag")
            if "activationLagCount" not in metadata:
                problems.append(f"{tw}: lagCount needs activationLagCount")
        elif "pendingEntriesCount" in metadata:
            kinds_seen.add("pending")
        else:
            problems.append(f"{tw}: neither lagCount nor pendingEntriesCount")
        address = metadata.get("address", "")
        host, _, address_port = address.rpartition(":")
        # the KEDA operator resolves the name from its own namespace: it must be fully qualified
        wanted = f"{redis_host}.{namespace}.svc"
        if host not in (wanted, wanted + ".cluster.local") or address_port != str(redis_port):
            problems.append(f"{tw}: address {address!r} is not {wanted}.cluster.local:{redis_port}")
    if triggers and "lag" not in kinds_seen:
        problems.append(f"{where}: no trigger on the consumer-group lag (the queue backlog)")
    return problems


def all_problems(root: Path, routes: set[str]) -> list[str]:
    """Every check above on the tree at `root`."""
    checks: Iterable[list[str]] = (
        requirements_problems(root),
        dockerfile_problems(root, routes),
        compose_schema_problems(root),
        compose_problems(root, routes),
        k8s_schema_problems(root),
        k8s_problems(root, routes),
    )
    return [problem for problems in checks for problem in problems]
