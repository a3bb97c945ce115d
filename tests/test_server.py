"""The web server as `make run` starts it (server.py): Streamlit's routes closed without a session, before any
body is read; bodies capped; the session's cookie handed over once, HttpOnly and SameSite=Strict."""

import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.harness import free_port, start_app, stop_app
from services import auth
from settings import ROOT
from tests.users import make_actor

pytestmark = pytest.mark.slow
CAP_MB = 1  # MAX_UPLOAD_MB and MAX_ZIP_MB of the server under test
GUARDED = [
    ("PUT", "/_stcore/upload_file/any-session/any-file"),
    ("GET", "/media/0123456789abcdef.png"),
    ("GET", "/_stcore/metrics"),
    ("GET", "/_stcore/agent/openapi.json"),
    ("GET", "/_stcore/script-health-check"),
    ("GET", "/app/static/anything.txt"),
    ("GET", "/auth/login"),
]


@dataclass
class Server:
    port: int
    log: Path

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):  # type: ignore[no-untyped-def]
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.body = response.read()
        connection.close()
        return response

    def head_only(self, request_head: str, cookie: str | None = None) -> str:
        """Send a request's head but none of the body it announces; the status line of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            extra = f"Cookie: {auth.COOKIE_NAME}={cookie}\r\n" if cookie else ""
            sock.sendall(f"{request_head}Host: 127.0.0.1\r\n{extra}\r\n".encode())
            return sock.recv(4096).decode("latin-1").split("\r\n", 1)[0]

    def cookie_for(self, actor: auth.Actor) -> str:
        """The cookie a browser gets after signing in as `actor`: through the one-time code, as the page does."""
        response = self.request("POST", "/api/session", body=auth.cookie_code(actor).encode())
        assert response.status == 204, response.body
        header = response.getheader("set-cookie")
        assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/" in header
        assert "Secure" not in header  # served over plain HTTP here; over TLS it is Secure
        return header.split(";", 1)[0].split("=", 1)[1]


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    try:
        process = start_app(port, log, ready_s=120, env={"MAX_UPLOAD_MB": str(CAP_MB), "MAX_ZIP_MB": str(CAP_MB)})
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield Server(port, log)
    stop_app(process)


def test_without_a_live_session_streamlits_routes_answer_401_before_reading_a_body(server):
    # 500 MB announced and never sent: the answer comes anyway, so none of the body was waited for.
    head = "PUT /_stcore/upload_file/s/f HTTP/1.1\r\nContent-Length: 524288000\r\n"
    assert server.head_only(head + "Content-Type: multipart/form-data; boundary=x\r\n") == "HTTP/1.1 401 Unauthorized"
    for method, path in GUARDED:
        assert server.request(method, path).status == 401, path
    actor = make_actor("clinician", "ana")
    cookie = server.cookie_for(actor)
    auth.sign_out(actor)
    for method, path in GUARDED:  # the cookie of a session that ended opens nothing either
        assert server.request(method, path, headers={"Cookie": f"{auth.COOKIE_NAME}={cookie}"}).status == 401
    # The page itself, its health check and its configuration are open: they are what the sign-in form needs.
    assert server.request("GET", "/_stcore/health").body == b"ok"
    assert b"<html" in server.request("GET", "/Diagnose").body.lower()
    assert server.request("GET", "/_stcore/host-config").status == 200


def test_with_a_live_session_requests_pass_and_bodies_are_capped(server):
    cookie = server.cookie_for(make_actor("clinician", "ben"))
    with_cookie = {"Cookie": f"{auth.COOKIE_NAME}={cookie}"}
    assert server.request("GET", "/_stcore/metrics", headers=with_cookie).status == 200
    # Past the guard, Streamlit answers for itself: this request carries none of its XSRF token.
    small = server.request("PUT", "/_stcore/upload_file/none/none", body=b"x" * 1000, headers=with_cookie)
    assert small.status == 403 and b"XSRF" in small.body
    too_big = f"PUT /_stcore/upload_file/s/f HTTP/1.1\r\nContent-Length: {(CAP_MB + 2) * 2**20}\r\n"
    assert server.head_only(too_big, cookie) == "HTTP/1.1 413 Request Entity Too Large"
    # A chunked body has no length to check first: it is counted as it arrives and cut off past the cap (here on
    # the one route that reads a body before anything else, the cookie exchange: 4 KiB without a session).
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    chunks = (b"y" * 1024 for _ in range(64))
    connection.request("POST", "/api/session", body=chunks, encode_chunked=True)
    assert connection.getresponse().status == 413
    connection.close()


def test_the_cookie_is_handed_over_once_and_only_to_the_apps_own_pages(server):
    actor = make_actor("clinician", "cleo")
    code = auth.cookie_code(actor)
    other_site = server.request("POST", "/api/session", body=code.encode(), headers={"Origin": "https://evil.test"})
    assert other_site.status == 403
    assert server.request("POST", "/api/session", body=code.encode()).status == 204
    assert server.request("POST", "/api/session", body=code.encode()).status == 403  # spent
    assert server.request("POST", "/api/session", body=b"c" * 10_000).status == 413  # no session: a few KiB at most


def test_started_any_other_way_than_python_server_py_it_refuses_to_serve(module_db_url, tmp_path):
    # `streamlit run server.py` without FORWARDED_ALLOW_IPS: uvicorn would believe X-Forwarded-For from any
    # local client, so the app stops instead of serving with a spoofable address.
    command = [sys.executable, "-m", "streamlit", "run", "server.py", "--server.port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if k != "FORWARDED_ALLOW_IPS"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "start the app with `python server.py`" in result.stdout + result.stderr


def test_guarded_routes_are_told_apart_from_the_page_and_its_assets():
    from server import _guarded

    for path in ("/_stcore/upload_file/a/b", "/media/x.png", "/_stcore/metrics", "/_stcore/new-route", "/auth/login"):
        assert _guarded(path), path
    for path in ("/", "/Diagnose", "/static/js/main.js", "/_stcore/health", "/_stcore/stream", "/api/session"):
        assert not _guarded(path), path
