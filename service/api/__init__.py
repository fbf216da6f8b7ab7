"""HTTP API (FastAPI): app factory, dependencies, problem+json errors, one router per resource."""

from service.api.app import create_app

__all__ = ["create_app"]
