"""Fixtures of the reliability tests: the shared test Redis (each test uses its own key prefix)."""

from __future__ import annotations

from tests.service.conftest import redis_url

__all__ = ["redis_url"]
