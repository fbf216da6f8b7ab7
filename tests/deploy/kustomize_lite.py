"""`kustomize build` for the subset of kustomization fields that deploy/k8s uses, in Python.

CI machines have no kustomize binary, so the static checks build the manifests themselves. Any
kustomization field outside the supported subset raises `UnsupportedKustomization` rather than
being ignored, and where `kubectl kustomize` exists the tests compare both outputs.

Supported: `resources` (files and kustomization folders), `namespace`, `configMapGenerator` and
`secretGenerator` with `options.disableNameSuffixHash: true` (files and literals), `patches` with
`path` (strategic merge for built-in kinds with Kubernetes' merge keys, JSON merge for others)
and `images` (`newName`, `newTag`, `digest`).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "configMapGenerator",
    "secretGenerator",
    "patches",
    "images",
}
CLUSTER_SCOPED_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
}
# strategic-merge-patch keys of the list fields that deploy/k8s patches (k8s.io/api types)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class UnsupportedKustomization(ValueError):
    """The kustomization uses a field this builder does not implement."""


def load_documents(path: Path) -> list[Manifest]:
    """Every non-empty YAML document of a manifest file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def key_of(manifest: Manifest) -> tuple[str, str]:
    """(kind, name): how a patch or a reference finds its target."""
    return manifest["kind"], manifest["metadata"]["name"]


def _generated(kind: str, spec: dict[str, Any], folder: Path) -> Manifest:
    options = spec.get("options", {})
    if not options.get("disableNameSuffixHash"):
        raise UnsupportedKustomization(
            f"{kind} generator {spec['name']!r}: only disableNameSuffixHash: true is supported"
        )
    if spec.get("behavior", "create") != "create":
        raise UnsupportedKustomization(f"generator {spec['name']!r}: only behavior: create")
    data: dict[str, str] = {}
    for item in spec.get("files", []):
        key, _, relative = item.rpartition("=") if "=" in item else ("", "", item)
        data[key or Path(relative).name] = (folder / relative).read_text()
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    manifest: Manifest = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        manifest["type"] = spec.get("type", "Opaque")
        manifest["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        manifest["data"] = data
    for field in ("labels", "annotations"):
        if options.get(field):
            manifest["metadata"][field] = dict(options[field])
    return manifest


def strategic_merge(target: Any, patch: Any, strategic: bool, field: str | None = None) -> Any:
    """Merge `patch` into `target`: maps recursively, keyed lists by their merge key."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = strategic_merge(merged[name], value, strategic, name)
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    merge_key = MERGE_KEYS.get(field or "") if strategic else None
    if merge_key and isinstance(target, list) and isinstance(patch, list):
        merged_list = [copy.deepcopy(item) for item in target]
        for item in patch:
            for index, existing in enumerate(merged_list):
                if existing.get(merge_key) == item.get(merge_key):
                    merged_list[index] = strategic_merge(existing, item, strategic)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _pod_specs(manifest: Manifest) -> list[dict[str, Any]]:
    spec = manifest.get("spec", {})
    if manifest["kind"] == "Pod":
        return [spec]
    template = spec.get("template", {}).get("spec")
    if template is not None:
        return [template]
    job_template = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    return [job_template] if job_template is not None else []


def _split_image(image: str) -> tuple[str, str]:
    """('registry/name', ':tag' or '@digest' or '')."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _set_images(manifests: list[Manifest], images: list[dict[str, str]]) -> None:
    for manifest in manifests:
        for pod_spec in _pod_specs(manifest):
            for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
                name, suffix = _split_image(container["image"])
                for rule in images:
                    if rule["name"] != name:
                        continue
                    new_name = rule.get("newName", name)
                    if "digest" in rule:
                        suffix = "@" + rule["digest"]
                    elif "newTag" in rule:
                        suffix = ":" + str(rule["newTag"])
                    container["image"] = new_name + suffix


def build(folder: Path) -> list[Manifest]:
    """The manifests of the kustomization in `folder`, like `kustomize build folder`."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{folder}: unsupported fields {sorted(unknown)}")
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        manifests += build(path) if path.is_dir() else load_documents(path)
    for spec in kustomization.get("configMapGenerator", []):
        manifests.append(_generated("ConfigMap", spec, folder))
    for spec in kustomization.get("secretGenerator", []):
        manifests.append(_generated("Secret", spec, folder))
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise UnsupportedKustomization(f"{folder}: only `patches: - path: ...` is supported")
        for patch in load_documents(folder / entry["path"]):
            targets = [m for m in manifests if key_of(m) == key_of(patch)]
            if len(targets) != 1:
                raise ValueError(f"{folder / entry['path']}: no single target {key_of(patch)}")
            index = manifests.index(targets[0])
            # built-in API groups ("v1", "apps/v1", "*.k8s.io/...") take strategic merge
            # patches; custom resources (KEDA's) take JSON merge patches
            group = patch["apiVersion"].rpartition("/")[0]
            strategic = "." not in group or group.endswith(".k8s.io")
            manifests[index] = strategic_merge(targets[0], patch, strategic)
    namespace = kustomization.get("namespace")
    if namespace:
        for manifest in manifests:
            if manifest["kind"] not in CLUSTER_SCOPED_KINDS:
                manifest.setdefault("metadata", {})["namespace"] = namespace
    _set_images(manifests, kustomization.get("images", []))
    return manifests
