"""The browser console's files: the built front-end (``api/console/dist/``, made by
``./dev setup`` with npm; not committed) served at ``/console/``.

- ``/`` and ``/console`` redirect to ``/console/``.
- A file of the build is served as it is: hashed ``assets/`` with a year's cache
  (immutable), anything else (``index.html``, icons) ``no-cache``.
- Any other path under ``/console/`` answers ``index.html``, so the console's own routes
  (``/console/incidents/12``) load the app; a missing file under ``assets/`` is a 404,
  never the page in place of a script.
- Only files inside the build directory, after resolving ``..`` and links, are served.
- No build: 503, ``console not built: run ./dev setup``.
- Every answer carries the console's Content-Security-Policy (scripts, styles, images
  and API calls of this origin only; images also ``blob:``/``data:``, the evidence
  snapshots; inline styles for the chart library), ``nosniff``, and may not be framed.

The routes are not in the OpenAPI schema: they are not the API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

DEFAULT_DIST = Path(__file__).resolve().parent / "console" / "dist"
PREFIX = "/console"
NOT_BUILT = "console not built: run ./dev setup"
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline';"
       " connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self';"
       " frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"


def resolve(dist: Path, path: str) -> tuple[Path | None, str]:
    """The file to answer ``/console/<path>`` with and its Cache-Control; None: 404.
    ``dist`` must exist and hold ``index.html``."""
    root = dist.resolve()
    index = root / "index.html"
    if not path or "\x00" in path or "\\" in path:
        return index, NO_CACHE
    candidate = (root / path).resolve()
    if candidate.is_relative_to(root) and candidate != root and candidate.is_file():
        under_assets = candidate.is_relative_to(root / "assets")
        return candidate, IMMUTABLE if under_assets else NO_CACHE
    if path.startswith("assets/"):
        return None, NO_CACHE
    return index, NO_CACHE


def mount_console(app: FastAPI, dist: Path | None = None) -> None:
    """Add the console's routes to ``app``, serving the build in ``dist`` (default:
    ``api/console/dist``), which is looked at on each request: a build made while the
    API runs is served without a restart."""
    directory = dist or DEFAULT_DIST

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @app.get(PREFIX, include_in_schema=False)
    async def console_bare() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @app.api_route(PREFIX + "/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def console(path: str) -> Response:
        if not (directory / "index.html").is_file():
            return PlainTextResponse(NOT_BUILT, status_code=503, headers={
                **SECURITY_HEADERS, "Cache-Control": "no-store", "Retry-After": "60"})
        file, cache = resolve(directory, path)
        if file is None:
            return PlainTextResponse("not found", status_code=404,
                                     headers={**SECURITY_HEADERS, "Cache-Control": NO_CACHE})
        return FileResponse(file, headers={**SECURITY_HEADERS, "Cache-Control": cache})
