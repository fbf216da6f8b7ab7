"""The service's own facts the deployment files must agree with: setting names, types and
defaults (`service.settings.Settings`), Redis settings, and the shared constants of the checks."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from service.settings import Settings
from tests.deploy import kustomize_lite

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


def duration_s(text: str | int | float) -> float:
    """Compose durations ("10m", "1m30s", "90s", 45) in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def url_port_and_path(text: str) -> tuple[int | None, str | None]:
    """Port and path of the first http://127.0.0.1|localhost URL in a health-check command."""
    match = re.search(r"https?://(?:127\.0\.0\.1|localhost)(?::(\d+))?(/[^'\"\s]*)?", text)
    if match is None:
        return None, None
    return (int(match.group(1)) if match.group(1) else 80), match.group(2) or "/"


def flag_value(words: list[str], flag: str) -> str | None:
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def redis_conf(text: str) -> dict[str, str]:
    """redis.conf directives (last one wins), lower-case names."""
    directives: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            directives[name.lower()] = value.strip()
    return directives


def redis_conf_problems(text: str, where: str) -> list[str]:
    conf = redis_conf(text)
    problems = []
    if conf.get("appendonly") != "yes":
        problems.append(f"{where}: Redis AOF is off (need `appendonly yes`)")
    if conf.get("maxmemory-policy") != "noeviction":
        problems.append(f"{where}: maxmemory-policy is not noeviction (evictions lose jobs)")
    return problems


def image_name(image: str) -> str:
    """The image reference without tag or digest."""
    return kustomize_lite._split_image(image)[0]


def redis_major(image: str) -> int | None:
    match = re.match(r"^(?:docker\.io/)?(?:library/)?redis:(\d+)", image)
    return int(match.group(1)) if match else None
