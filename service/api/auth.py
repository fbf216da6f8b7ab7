"""API keys -> tenants, read from a YAML or JSON file (`NOWCAST_API_KEYS_FILE`).

File format: a mapping of key to tenant name, e.g. ``{"3f9c...": "meteo-ch"}``; several keys may
map to the same tenant (rotation). Keys are compared in constant time: the presented key's SHA-256
is compared with every stored key's SHA-256 with `hmac.compare_digest`, and all entries are always
visited, so neither the position nor a shared prefix of a key shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

# the tenant of every request when auth is off (no keys file configured)
ANONYMOUS_TENANT = "anonymous"
MIN_KEY_LENGTH = 16


class ApiKeys:
    """Lookup of tenants by API key.

    Parameters
    ----------
    keys_to_tenants : dict
        API key -> tenant name.
    """

    def __init__(self, keys_to_tenants: dict[str, str]) -> None:
        self._entries = [
            (hashlib.sha256(key.encode()).digest(), tenant)
            for key, tenant in keys_to_tenants.items()
        ]

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        """Read the keys file; raises ValueError saying what is wrong with it."""
        try:
            document = yaml.safe_load(Path(path).read_text())  # YAML is a superset of JSON
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read API keys file {path}: {exc}") from exc
        if not isinstance(document, dict) or not document:
            raise ValueError(f"API keys file {path} must be a non-empty mapping of key: tenant")
        keys: dict[str, str] = {}
        for key, tenant in document.items():
            if not isinstance(key, str) or not isinstance(tenant, str) or not tenant:
                raise ValueError(f"API keys file {path}: every entry must be `key: tenant` text")
            if len(key) < MIN_KEY_LENGTH:
                raise ValueError(
                    f"API keys file {path}: the key of tenant {tenant!r} is shorter than "
                    f"{MIN_KEY_LENGTH} characters; use e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`"
                )
            keys[key] = tenant
        return cls(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def tenant_for(self, key: str) -> str | None:
        """The tenant of `key`, or None when it is not a valid key."""
        presented = hashlib.sha256(key.encode()).digest()
        found = None
        for digest, tenant in self._entries:
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found
