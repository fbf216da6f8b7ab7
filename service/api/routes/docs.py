"""`/docs` (Swagger UI) and `/redoc` with every asset served by the API itself, no CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank without internet. The
assets come from the `fastapi-offline` package (Swagger UI 5 and ReDoc 2 as shipped files); its
`FastAPIOffline` app factory is not used, only its files, under `/docs/assets`. The
`swagger-ui-bundle` package did not fit: it ships Swagger UI 4, which cannot render the
OpenAPI 3.1 documents that FastAPI writes.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"
# Only this server: ReDoc's bundle still loads its "API docs by Redocly" logo from the vendor's
# CDN (hard-coded; it hides itself when that fails). The policy stops that request before it
# leaves the browser. Swagger UI's start-up script is inline, ReDoc styles inline and searches in
# a blob: worker.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'"
)


def docs_assets_dir() -> Path:
    """The folder of the shipped Swagger UI / ReDoc files."""
    return Path(str(files("fastapi_offline") / "static"))


router = APIRouter(include_in_schema=False)


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


def _asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"


@router.get("/docs", response_class=HTMLResponse)
def get_swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this API's OpenAPI document."""
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_asset(request, SWAGGER_JS),
        swagger_css_url=_asset(request, SWAGGER_CSS),
        swagger_favicon_url=_asset(request, FAVICON),
        # the default validator is an external service: no calls out of an offline page
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/redoc", response_class=HTMLResponse)
def get_redoc(request: Request) -> HTMLResponse:
    """ReDoc on this API's OpenAPI document."""
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset(request, REDOC_JS),
        redoc_favicon_url=_asset(request, FAVICON),
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install_docs(app: FastAPI) -> None:
    """Add `/docs`, `/redoc` and their assets; create the app with `docs_url=redoc_url=None`."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=docs_assets_dir()), name="docs-assets")
