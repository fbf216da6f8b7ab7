"""Checks of the kustomize base and GPU overlay against the service, the Dockerfile and compose."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.queue.constants import CONSUMER_GROUP, RedisKeys
from tests.deploy import compose_file, kustomize_lite
from tests.deploy.checks.compose import compose_variants
from tests.deploy.checks.facts import (
    CPU_TARGET,
    DRAIN_MARGIN_S,
    GPU_TARGET,
    K8S_BASE,
    K8S_GPU_OVERLAY,
    KUBERNETES_VERSIONS,
    effective_setting,
    env_problems,
    flag_value,
    image_name,
    redis_conf,
    redis_conf_problems,
    redis_major,
    settings_default,
)


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
            same = image == wanted if name == "redis" else image_name(image) == wanted
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
                images[target] = image_name(service["image"])
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
    data_dir = redis_conf(conf_text).get("dir", "/data")
    claims = {claim["metadata"]["name"] for claim in spec.get("volumeClaimTemplates", [])}
    if not any(
        m["mountPath"] == data_dir and m["name"] in claims
        for m in container.get("volumeMounts", [])
    ):
        problems.append(f"{where}: redis {data_dir} is not on a PersistentVolumeClaim")
    conf_port = int(redis_conf(conf_text).get("port", 6379))
    if (
        service is not None
        and _resolve_port(container, service["spec"]["ports"][0].get("targetPort", port))
        != conf_port
    ):
        problems.append(f"{where}: Redis Service does not reach redis.conf's port {conf_port}")
    major = redis_major(container["image"])
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
    if args[:1] != ["serve"] or flag_value(args, "--workers") != "0":
        problems.append(f"{where}: should run `serve --workers 0`, runs {args}")
    arg_port = flag_value(args, "--port")
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
