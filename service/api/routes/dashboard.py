"""`/dashboard`: one static page (HTML + vanilla JS, no build step, no CDN) over the v1 API.

The page itself holds no data: it calls `/v1/nowcasts` with the API key the user typed (kept in
the tab's sessionStorage), so it shows exactly what that key may see. Its files ship as package
data under `service/api/static/dashboard`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/dashboard/assets"
# the page talks to this server only; quick-look images arrive as blob: URLs
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; frame-ancestors 'none'"
)


def dashboard_dir() -> Path:
    """The folder of the dashboard's files."""
    return Path(str(files("service.api") / "static" / "dashboard"))


router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
def get_dashboard() -> FileResponse:
    """The dashboard page."""
    # no-cache: a new release's page must not run against an old cached script
    return FileResponse(
        dashboard_dir() / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


def install_dashboard(app: FastAPI) -> None:
    """Add `/dashboard` and its assets to the app."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=dashboard_dir()), name="dashboard-assets")
