"""The running system, for the browser tests and the benchmarks alike: a private Redis, a Celery worker process,
the app under Streamlit, headless Debian Chromium, and a browser tab driven the way a person drives it.

After every action the tab waits for Streamlit's own state (connected, script run over), never a fixed time.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis
from playwright.sync_api import Locator, Page, expect

from settings import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
# `make run`'s worker: both queues. Tests and benchmarks add a name, and leave out gossip and mingle (slow starts).
WORKER_ARGUMENTS = ["-A", "worker.celery_app", "worker", "-Q", "training,prediction"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    """A redis-server of its own on a free port, to stop and start again mid-test."""

    port: int
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
                   "--save", "", "--appendonly", "no"]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def start_worker(
    name: str, log_path: Path, *, arguments: list[str] | None = None, env: dict[str, str] | None = None, ready_s: float
) -> subprocess.Popen[bytes]:
    """A real `celery` worker named `name` (on `arguments`, default WORKER_ARGUMENTS) with this process's environment
    and `env`, in a process group of its own, once it answers a ping; RuntimeError with its log's end if it exits or
    stays silent for `ready_s`."""
    from worker.celery_app import celery_app

    command = [sys.executable, "-m", "celery", *(arguments or WORKER_ARGUMENTS), "-n", name, "--loglevel=INFO",
               "--without-gossip", "--without-mingle"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}:\n{_tail(log_path)}")
        if celery_app.control.ping(destination=[name], timeout=1.0):
            return process
    stop_worker(process)
    raise RuntimeError(f"the worker did not answer a ping within {ready_s:.0f}s:\n{_tail(log_path)}")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (the current task finishes), then the whole group killed if it takes too long."""
    if process.poll() is not None:
        return
    # SIGTERM to the main process only: it lets its pool finish, whereas a signalled child counts as lost.
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _tail(log_path: Path, chars: int = 6000) -> str:
    return log_path.read_text(errors="replace")[-chars:]


def start_app(
    port: int, log_path: Path, *, ready_s: float, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The app as `make run` starts it (server.py: Streamlit behind its session check) on 127.0.0.1:`port` with this
    process's environment and `env`, once it answers; RuntimeError with its log if it exits or stays silent for
    `ready_s`."""
    command = [sys.executable, "server.py", "--port", str(port), "--address", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_s
    while not answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_app(process)
            raise RuntimeError(f"Streamlit did not come up at {url}:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.5)
    return process


def answers(url: str) -> bool:
    """Whether the app at `url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


def stop_app(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


SETTLE_TIMEOUT_MS = 120_000  # a first run loads both models next to a training job on shared cores


# How long an expected element may take to appear after the app settled. A script run that has not yet
# started when `settle` looks (the server had not answered the click) is still in this budget.
EXPECT_TIMEOUT_MS = 60_000


RESULT_TIMEOUT_MS = 300_000  # background jobs: a batch over the sample folder, a tiny training run


# The sidebar's name of each page, by its URL path.
PAGE_TITLES = {
    "": "Home",
    "Diagnose": "Diagnose",
    "Batch": "Batch",
    "Review": "Review queue",
    "History": "History",
    "Series": "Series",
    "PACS": "PACS",
    "Train": "Train",
    "Leaderboard": "Leaderboard",
    "Models": "Models",
    "Users": "Users",
    "Audit": "Audit log",
}


@dataclass
class App:
    page: Page
    url: str
    screenshot_dir: Path | None  # None: screenshots are not written
    username: str
    password: str

    def load(self, path: str = "") -> None:
        """Open a URL of the app in this tab and wait for its run: a new browser session, signed in only when this
        profile's cookie names a live session (a reload keeps the tab signed in)."""
        self.page.goto(f"{self.url}/{path}")
        expect(self.page.get_by_test_id("stAppViewContainer")).to_be_attached(timeout=SETTLE_TIMEOUT_MS)
        self.settle()

    def sign_in(self, username: str | None = None, password: str | None = None) -> None:
        """Fill in the sign-in form and submit it, as a person does."""
        main = self.main()
        main.get_by_role("textbox", name="User name").fill(username or self.username)
        main.get_by_label("Password", exact=True).fill(password or self.password)
        self.click(main.get_by_role("button", name="Sign in"))

    def open(self, path: str = "") -> None:
        """Go to a page of the app (`""` is Home, "Diagnose" is views/1_Diagnose.py) through the sidebar, signing
        in first when this tab is not signed in yet."""
        if not self.page.get_by_test_id("stSidebarNav").is_visible():
            self.load()
            if not self.page.get_by_test_id("stSidebarNav").is_visible():
                self.sign_in()
            expect(self.page.get_by_test_id("stSidebarNav")).to_be_visible()
        self.click(self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=PAGE_TITLES[path], exact=True))

    def settle(self) -> None:
        """Wait until the app is connected and its script run is over."""
        root = self.page.get_by_test_id("stApp")
        expect(root).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=SETTLE_TIMEOUT_MS)
        expect(root).to_have_attribute("data-test-script-state", "notRunning", timeout=SETTLE_TIMEOUT_MS)

    def main(self) -> Locator:
        """The page's main area (not the sidebar navigation)."""
        return self.page.get_by_test_id("stMain")

    def click(self, target: Locator) -> None:
        target.click()
        self.settle()

    def fill(self, target: Locator, text: str) -> None:
        """Type into a text input and commit it with Enter, as a person does."""
        target.fill(text)
        target.press("Enter")
        self.settle()

    def screenshot(self, name: str, show: Locator | None = None) -> None:
        """Save the window as docs/screenshots/<name>.png, scrolled to `show`, when screenshots are asked for."""
        if self.screenshot_dir is None:
            return
        self.settle()
        if show is not None:
            # The app scrolls inside its own container, so a full-page shot would still end at the window.
            show.evaluate("element => element.scrollIntoView({block: 'start'})")
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=self.screenshot_dir / f"{name}.png")


def signed_in_as(at, actor):  # (AppTest, services.auth.Actor) -> AppTest
    """A page under Streamlit's AppTest with its tab signed in to `actor`'s server-side session, as the sign-in form
    leaves it once the browser holds its cookie."""
    from ui.auth import AUTH_KEY, COOKIE_READ_KEY

    at.session_state[AUTH_KEY] = {"login_id": actor.login_id}
    at.session_state[COOKIE_READ_KEY] = True
    return at
