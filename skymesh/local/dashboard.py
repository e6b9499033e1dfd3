"""The web dashboard's built files (``web/dist``), as the local API server serves them.

The dashboard is a static single-page app that talks to the REST API only; served by the
API's own HTTP server it shares the API's origin, so the browser needs no CORS locally.
Every path outside ``/v1/`` is a dashboard file; a path with no file is the app's
``index.html`` (the app routes in the URL fragment, so that is only a mistyped address).

What a browser is told about each file:

- ``index.html`` is never cached (a rebuilt dashboard is seen on the next load); files
  under ``assets/`` have content hashes in their names and are cached for a year.
- Every answer carries a Content-Security-Policy that allows scripts, styles, images
  and connections from this origin only, forbids framing (clickjacking) and sends no
  referrer: the admin key typed into the page can only go back to this API.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

__all__ = ["API_PREFIX", "DEFAULT_DIST", "StaticFile", "is_built", "resolve", "HEADERS"]

DEFAULT_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
"""Where ``make web`` (``npm run build`` in ``web/``) writes the dashboard."""

API_PREFIX = "/v1/"
"""Paths under it are the API's; every other path is the dashboard's."""

HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
"""Sent with every dashboard file (module docstring)."""

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json"}


@dataclass(frozen=True)
class StaticFile:
    path: Path
    content_type: str
    cache_control: str


def is_built(dist: Path = DEFAULT_DIST) -> bool:
    """Whether ``dist`` holds a built dashboard (its ``index.html``)."""
    return (dist / "index.html").is_file()


def resolve(dist: Path, url_path: str) -> StaticFile | None:
    """The file of ``dist`` that answers ``url_path`` (query left out), or ``None`` when the
    dashboard is not built. Never a file outside ``dist``: ``..`` and symlinks out of it
    fall back to ``index.html``.

    >>> resolve(Path("/nonexistent"), "/") is None
    True
    """
    root = dist.resolve()
    index = root / "index.html"
    if not index.is_file():
        return None
    relative = unquote(url_path.split("?", 1)[0].split("#", 1)[0]).lstrip("/")
    candidate = (root / relative).resolve() if relative else index
    if not candidate.is_file() or not candidate.is_relative_to(root):
        candidate = index
    content_type = _TYPES.get(candidate.suffix) or mimetypes.guess_type(candidate.name)[0] \
        or "application/octet-stream"
    hashed = candidate.parent == root / "assets"
    return StaticFile(candidate, content_type,
                      "public, max-age=31536000, immutable" if hashed else "no-cache")
