"""The web server: the app (Home.py) on Streamlit's own server, behind a check no request gets past without a
session. `python server.py [--port 8501] [--address 127.0.0.1]` is what `make run` and the container start.

Streamlit serves uploads (/_stcore/upload_file), media (/media: images, downloads) and metrics to anyone holding
a browser session id; here those routes, and every other route that is not the page itself, its assets, its
websocket or its health check, answer 401 to a request without a live session cookie, before a byte of its
body is read. Every request body is capped: at the largest upload the pages take (MAX_UPLOAD_MB, MAX_ZIP_MB)
with a session, at a few KiB without. The client's address is the socket's, or the one a proxy listed in
FORWARDED_ALLOW_IPS puts in X-Forwarded-For; the pages learn it from a header set here (ui/auth.py).
"""

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import streamlit as st
from starlette.middleware import Middleware
from starlette.requests import Request, cookie_parser
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services import auth
from services.sign_in_throttle import client_address
from settings import get_settings
from ui.auth import CLIENT_HEADER, COOKIE_ROUTE

# Open to a visitor who has not signed in: the page and its scripts (any other path), its websocket, the health
# check, the page's own configuration, the components' code, and trading a sign-in's one-time code for a cookie.
PUBLIC = ("/_stcore/health", "/_stcore/host-config", "/_stcore/stream", "/_stcore/bidi-components/", COOKIE_ROUTE)
# Closed without a session: Streamlit's other routes, now and whatever it adds under them later.
GUARDED = ("/_stcore/", "/media/", "/app/static/", "/auth/", "/oauth2callback")
PUBLIC_BODY_BYTES = 4096
# Streamlit's upload route allows a multipart envelope of this much around the file.
MULTIPART_BYTES = 2**20
CLIENT_HEADER_BYTES = CLIENT_HEADER.lower().encode()


class BodyTooLarge(Exception):
    pass


def _guarded(path: str) -> bool:
    if any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC):
        return False
    return any(path == p.rstrip("/") or path.startswith(p) for p in GUARDED)


def _cookie(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            return cookie_parser(value.decode("latin-1")).get(auth.COOKIE_NAME)
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


class SessionGuard:
    """Pure ASGI middleware in front of every Streamlit route (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = client_address(scope["client"][0] if scope.get("client") else None)
        headers = [(k, v) for k, v in scope["headers"] if k != CLIENT_HEADER_BYTES]
        headers.append((CLIENT_HEADER_BYTES, (client or "unknown").encode()))
        scope = {**scope, "headers": headers}
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        live = False
        if _guarded(scope["path"]):
            live = await anyio.to_thread.run_sync(auth.cookie_is_live, _cookie(scope))
            if not live:
                await _answer(scope, receive, send, 401, "Sign in first.")
                return
        limit = get_settings().max_request_mb * 2**20 + MULTIPART_BYTES if live else PUBLIC_BODY_BYTES
        length = _content_length(scope)
        if length is not None and (length < 0 or length > limit):
            await _answer(scope, receive, send, 413 if length > limit else 400, "The request body is too large.")
            return
        await self._capped(scope, receive, send, limit)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Pass the request on, its body counted as it arrives (a chunked body has no length to check first)."""
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await _answer(scope, receive, send, 413, "The request body is too large.")


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
    response = PlainTextResponse(text, status_code=status, headers={"Cache-Control": "no-store"})
    await response(scope, receive, send)


async def session_cookie(request: Request) -> Response:
    """Trade a sign-in's one-time code (the request body) for the session's cookie: HttpOnly, so no script reads
    it, SameSite=Strict, so no other site's page sends it, Secure when served over TLS."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return PlainTextResponse("Another site may not do this.", status_code=403)
    code = (await request.body()).decode("ascii", "replace").strip()
    token = await anyio.to_thread.run_sync(auth.claim_cookie, code)
    if token is None:
        return PlainTextResponse("That code is spent, expired or unknown: sign in again.", status_code=403)
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        auth.COOKIE_NAME, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )
    return response


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    # The web server (uvicorn) took the trusted proxies from FORWARDED_ALLOW_IPS before this module was imported,
    # trusting the loopback when it is unset: refuse to serve unless it holds exactly what the settings say.
    wanted = get_settings().forwarded_allow_ips
    if os.environ.get("FORWARDED_ALLOW_IPS") != wanted:
        raise RuntimeError(
            f"FORWARDED_ALLOW_IPS must be {wanted!r} in the server's environment before it starts: "
            "start the app with `python server.py` (make run), which sets it from the settings"
        )
    yield


app = st.App(
    "Home.py",
    routes=[Route(COOKIE_ROUTE, session_cookie, methods=["POST"])],
    middleware=[Middleware(SessionGuard)],
    lifespan=lifespan,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python server.py", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--address", help="the address to listen on (default: server.address, 127.0.0.1)")
    parser.add_argument("--watch", action="store_true", help="run the pages again when their files change")
    args = parser.parse_args(argv)
    settings = get_settings()
    os.environ["FORWARDED_ALLOW_IPS"] = settings.forwarded_allow_ips
    config: dict[str, Any] = {"server.port": args.port, "server.maxUploadSize": settings.max_request_mb}
    if args.address:
        config["server.address"] = args.address
    if args.watch:
        config["server.fileWatcherType"] = "auto"
    app.run(config=config)


if __name__ == "__main__":
    main()
