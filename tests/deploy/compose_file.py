"""Compose files without Docker: YAML with Compose's tags, `${VAR}` interpolation, override merging
and validation against the Compose Specification schema.

The schema is the compose-spec JSON schema that check-jsonschema vendors
(`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, Apache-2.0, from
github.com/compose-spec/compose-spec), so validation needs no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Reset:
    """Compose's `!reset` tag: drop the inherited value (the tagged value is ignored)."""

    value: Any


@dataclass(frozen=True)
class Override:
    """Compose's `!override` tag: replace the inherited value instead of merging into it."""

    value: Any


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also knows `!reset` and `!override` (Compose 2.24.4+)."""


def _construct(tag_type: type) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return tag_type(loader.construct_mapping(node, deep=True))
        if isinstance(node, yaml.SequenceNode):
            return tag_type(loader.construct_sequence(node, deep=True))
        return tag_type(loader.construct_scalar(node) or None)

    return construct


_ComposeLoader.add_constructor("!reset", _construct(Reset))
_ComposeLoader.add_constructor("!override", _construct(Override))


def load_compose_yaml(path: Path) -> dict[str, Any]:
    """Parse one compose file, keeping `!reset` / `!override` as `Reset` / `Override` objects."""
    document = yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a compose file is a mapping")
    return document


_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any, environ: dict[str, str], missing: list[str]) -> Any:
    """Substitute `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `$$` like Compose does.

    Variables that are unset and have no default are appended to `missing` (Compose would
    substitute an empty string and warn).
    """
    if isinstance(value, dict):
        return {key: interpolate(item, environ, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ, missing) for item in value]
    if isinstance(value, Reset | Override):
        return type(value)(interpolate(value.value, environ, missing))
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = environ.get(name)
        if op in (":-", "-"):
            unset = current is None or (op == ":-" and current == "")
            return arg if unset else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                missing.append(name)
                return ""
            return current
        if op in (":+", "+"):
            set_ = current is not None and (op == "+" or current != "")
            return arg if set_ else ""
        if current is None:
            missing.append(name)
            return ""
        return current

    return _VARIABLE.sub(substitute, value)


def strip_tags(value: Any) -> Any:
    """The document as plain YAML data: `!reset x` / `!override x` become `x`."""
    if isinstance(value, dict):
        return {key: strip_tags(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strip_tags(item) for item in value]
    if isinstance(value, Reset | Override):
        return strip_tags(value.value)
    return value


# sequences that an override replaces (Compose merges the others, keeping unique entries)
_REPLACED_SEQUENCES = {"command", "entrypoint", "test", "capabilities"}


def merge(base: Any, override: Any, key: str | None = None) -> Any:
    """Merge one service-level (or top-level) override into `base` by Compose's rules."""
    if isinstance(override, Override):
        return strip_tags(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, Reset):
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(merged[name], value, name)
            else:
                merged[name] = strip_tags(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        merged_list = list(base)
        for item in override:
            if item not in merged_list:
                merged_list.append(strip_tags(item))
        return merged_list
    return strip_tags(override)


def effective_config(
    paths: list[Path], environ: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The merged, interpolated project of `docker compose -f a -f b ...`.

    Returns the configuration and the names of variables that had neither a value nor a default.
    """
    missing: list[str] = []
    config: dict[str, Any] = {}
    for path in paths:
        document = interpolate(load_compose_yaml(path), environ or {}, missing)
        config = merge(config, document)
    config = strip_tags(config)
    for service in config.get("services", {}).values():
        environment = service.get("environment")
        if isinstance(environment, list):  # ["KEY=value", ...] -> mapping, as Compose does
            service["environment"] = dict(
                item.split("=", 1) if "=" in item else (item, None) for item in environment
            )
    return config, sorted(set(missing))


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema vendored by check-jsonschema."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(document: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every violation of `schema` in `document`, as `path: message` lines."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]
