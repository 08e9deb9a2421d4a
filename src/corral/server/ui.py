"""Serving the web UI (``corral.ui``): the page at ``/``, its files at ``/ui/``.

The UI's responses carry a strict Content-Security-Policy (scripts, styles
and connections from this origin only, no inline script, no framing), so
even a bug that put text from a model or a user into the page as markup
could not run it. Files are revalidated on every load (``no-cache`` with
ETags), so an upgraded server is never paired with a stale script.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.ui import ASSETS, INDEX

HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; "
        b"img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
]


def install_ui(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX, media_type="text/html; charset=utf-8")

    app.mount("/ui", StaticFiles(directory=ASSETS), name="ui")


class UiHeaders:
    """Adds ``HEADERS`` to the responses of ``/`` and ``/ui/...``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/" and not path.startswith("/ui/"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0] != b"cache-control"),
                    *HEADERS,
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
