"""Settings from the environment, API-key files, model-folder resolution."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.auth import ApiKeys
from service.model_source import FALLBACK_SEED, resolve_model_dir
from service.settings import SHIPPED_MODEL_DIR, Settings


def test_settings_read_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOWCAST_REDIS_URL", "redis://example:6379/3")
    monkeypatch.setenv("NOWCAST_MAX_QUEUE_LENGTH", "7")
    monkeypatch.setenv("NOWCAST_DEVICE", "cpu")
    settings = Settings()
    assert settings.redis_url == "redis://example:6379/3"
    assert (settings.max_queue_length, settings.device) == (7, "cpu")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.result_ttl_s == 24 * 3600


def _readme_settings() -> dict[str, str]:
    """{field name: default cell} of the README's settings table (a row may name two variables,
    with one default each)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table: dict[str, str] = {}
    for line in readme.splitlines():
        if not line.startswith("| `NOWCAST_"):
            continue
        variables, defaults = line.split("|")[1:3]
        names = re.findall(r"`NOWCAST_([A-Z0-9_]+)`", variables)
        values = re.findall(r"`([^`]*)`", defaults) or [defaults.strip()]
        for name, value in zip(names, values, strict=True):
            table[name.lower()] = value
    return table


def _same_default(cell: str, default: Any) -> bool:
    if default is None:
        return cell == "unset"
    if isinstance(default, Path):
        return Path(cell).expanduser() == default
    if isinstance(default, int | float) and not isinstance(default, bool):
        return float(cell) == float(default)
    return cell == str(default)


def test_readme_settings_table_matches_the_settings_class() -> None:
    table = _readme_settings()
    assert set(table) == set(Settings.model_fields), set(table) ^ set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert _same_default(table[name], field.default), (name, table[name], field.default)


def test_settings_refuse_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOWCAST_DEVICE", "tpu")
    with pytest.raises(ValidationError, match="device"):
        Settings()
    monkeypatch.delenv("NOWCAST_DEVICE")
    with pytest.raises(ValidationError, match="twice heartbeat_interval_s"):
        Settings(lease_s=5, heartbeat_interval_s=5)


def test_api_keys_from_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "keys.yaml"
    yaml_file.write_text("k-aaaaaaaaaaaaaaaaaaaa: alpha\nk-bbbbbbbbbbbbbbbbbbbb: beta\n")
    keys = ApiKeys.from_file(yaml_file)
    assert keys.tenant_for("k-aaaaaaaaaaaaaaaaaaaa") == "alpha"
    assert keys.tenant_for("k-bbbbbbbbbbbbbbbbbbbb") == "beta"
    assert keys.tenant_for("k-aaaaaaaaaaaaaaaaaaa") is None  # a prefix is not a key
    assert keys.tenant_for("") is None
    json_file = tmp_path / "keys.json"
    json_file.write_text('{"k-cccccccccccccccccccc": "gamma"}')
    assert ApiKeys.from_file(json_file).tenant_for("k-cccccccccccccccccccc") == "gamma"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("REPLACE-ME: example-tenant\n", "shorter than 16"),
        ("- just\n- a list\n", "mapping"),
        ("k-aaaaaaaaaaaaaaaaaaaa: ''\n", "key: tenant"),
    ],
)
def test_bad_api_keys_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        ApiKeys.from_file(path)


def test_model_dir_resolution(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert resolve_model_dir(Settings(model_dir=tiny_model_dir)) == tiny_model_dir
    with pytest.raises(FileNotFoundError, match="no model.yaml"):
        resolve_model_dir(Settings(model_dir=tmp_path / "missing"))
    if (SHIPPED_MODEL_DIR / "model.yaml").is_file():
        assert resolve_model_dir(Settings()) == SHIPPED_MODEL_DIR
        return
    # no trained model shipped: the random fallback in the cache folder (here written already)
    cached = tmp_path / "cache" / f"random-tiny-seed{FALLBACK_SEED}"
    shutil.copytree(tiny_model_dir, cached)
    assert resolve_model_dir(Settings(model_cache_dir=tmp_path / "cache")) == cached
