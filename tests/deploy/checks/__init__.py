"""Static cross-checks of the deployment files against each other and against the service's code.

Each `*_problems` function reads the files under a repository root and returns a list of problems
(empty = fine), so the tests can run it on the real tree and on a deliberately broken copy. The
service's own facts come from its code: `service.settings.Settings` (env names, types, defaults,
the port), `service.queue.constants` (stream and consumer group) and the FastAPI app's routes.

One module per kind of file: `facts` (the service's facts and helpers the others share), `image`
(Dockerfile, pinned requirements, shipped model), `compose`, `kubernetes`; `all_problems` runs all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.deploy.checks.compose import (
    compose_problems,
    compose_schema_problems,
    compose_variants,
)
from tests.deploy.checks.facts import (
    BUILD_TOOLS,
    COMPOSE_CPU_OVERRIDE,
    COMPOSE_FILE,
    CPU_TARGET,
    DRAIN_MARGIN_S,
    ENV_PREFIX,
    GPU_TARGET,
    K8S_BASE,
    K8S_GPU_OVERLAY,
    KUBERNETES_VERSIONS,
    REQUIREMENTS_DIR,
    effective_setting,
    env_problems,
    redis_conf_problems,
    settings_default,
)
from tests.deploy.checks.image import (
    dockerfile_problems,
    requirements_problems,
    shipped_model_problems,
)
from tests.deploy.checks.kubernetes import (
    COUNT_FIELDS,
    REDIS_STREAMS_FIELDS,
    SCALED_OBJECT_SPEC_FIELDS,
    k8s_builds,
    k8s_problems,
    k8s_schema_problems,
    scaled_object_problems,
)

__all__ = [
    "BUILD_TOOLS",
    "COMPOSE_CPU_OVERRIDE",
    "COMPOSE_FILE",
    "CPU_TARGET",
    "DRAIN_MARGIN_S",
    "ENV_PREFIX",
    "GPU_TARGET",
    "K8S_BASE",
    "K8S_GPU_OVERLAY",
    "KUBERNETES_VERSIONS",
    "REQUIREMENTS_DIR",
    "effective_setting",
    "env_problems",
    "redis_conf_problems",
    "settings_default",
    "dockerfile_problems",
    "requirements_problems",
    "shipped_model_problems",
    "compose_problems",
    "compose_schema_problems",
    "compose_variants",
    "COUNT_FIELDS",
    "REDIS_STREAMS_FIELDS",
    "SCALED_OBJECT_SPEC_FIELDS",
    "k8s_builds",
    "k8s_problems",
    "k8s_schema_problems",
    "scaled_object_problems",
    "all_problems",
]


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
