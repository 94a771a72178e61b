"""The web console: `GET /` (its page) and `GET /console/{name}` (its script, stylesheet and icon).

Static files from backend/web/, no build step and nothing from a CDN (the appliance runs offline). The
files hold no data, so they need no API key: the console asks for the key and sends it with every API call
it makes. Only these responses carry the console's security headers (a strict Content-Security-Policy: no
inline script, no other origin); the API's JSON responses and /docs are left as they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from backend.errors import NotFound

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

# The only files served (a fixed list: no path from the URL ever reaches the file system).
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    # Markdown rendering of answers: marked, then DOMPurify (vendored from npm, backend/web/vendor/README.md).
    "marked.umd.js": "text/javascript; charset=utf-8",
    "purify.min.js": "text/javascript; charset=utf-8",
}
VENDORED = {"marked.umd.js", "purify.min.js"}  # under backend/web/vendor/

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # Revalidate every time (ETag): an upgraded backend never runs with a stale script.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _serve(request: Request, name: str, media_type: str) -> Response:
    try:
        body = (WEB_DIR / name).read_bytes()
    except OSError:
        raise NotFound(f"the console file {name!r} is not installed") from None
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/")
def console_page(request: Request) -> Response:
    """The console's page."""
    return _serve(request, "index.html", "text/html; charset=utf-8")


@router.get("/console/{name}")
def console_file(request: Request, name: str) -> Response:
    """The console's script, stylesheet, icon and vendored libraries."""
    media_type = FILES.get(name)
    if media_type is None:
        raise NotFound(f"no console file {name!r}")
    return _serve(request, f"vendor/{name}" if name in VENDORED else name, media_type)


def install_console(app: FastAPI) -> None:
    app.include_router(router)
