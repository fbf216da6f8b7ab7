"""Checks of the docker compose files against the service and the Dockerfile."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.deploy import compose_file
from tests.deploy.checks.facts import (
    COMPOSE_CPU_OVERRIDE,
    COMPOSE_FILE,
    CPU_TARGET,
    DRAIN_MARGIN_S,
    GPU_TARGET,
    duration_s,
    effective_setting,
    env_problems,
    flag_value,
    image_name,
    redis_conf,
    redis_conf_problems,
    redis_major,
    settings_default,
    url_port_and_path,
)
from tests.deploy.dockerfile import (
    parse_dockerfile,
)


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
                    image_name(service.get("image", ""))
                )
        redis_service, api, worker = services["redis"], services["api"], services["worker"]
        # Redis: durable, non-evicting, on a named volume, recent enough for the lag scaler
        conf_text, conf_where = _compose_redis_conf(root, config, redis_service)
        if conf_text is None:
            problems.append(f"{where}: redis runs without our redis.conf ({conf_where})")
            conf = {}
        else:
            problems += redis_conf_problems(conf_text, conf_where)
            conf = redis_conf(conf_text)
        data_dir = conf.get("dir", "/data")
        volumes = [v for v in redis_service.get("volumes", []) if isinstance(v, str)]
        named = [v.split(":")[0] for v in volumes if v.split(":")[1:2] == [data_dir]]
        if not named or named[0] not in (config.get("volumes") or {}):
            problems.append(f"{where}: redis {data_dir} is not on a named volume")
        major = redis_major(redis_service.get("image", ""))
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
    if command[:1] != ["serve"] or flag_value(command, "--workers") != "0":
        problems.append(f"{where}: api should run `serve --workers 0`, runs {command}")
    command_port = flag_value(command, "--port")
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
    hc_port, hc_path = url_port_and_path(" ".join(test) if isinstance(test, list) else test)
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
    grace_s = duration_s(worker.get("stop_grace_period", "10s"))
    if drain_s is not None and grace_s < drain_s + DRAIN_MARGIN_S:
        problems.append(
            f"{where}: worker stop_grace_period {grace_s:g}s <= drain {drain_s:g}s + margin"
        )
    test = (worker.get("healthcheck") or {}).get("test") or []
    if "--check" not in test:
        problems.append(f"{where}: worker healthcheck should be `nowcast worker --check`")
    return problems
