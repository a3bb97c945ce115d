"""The real stack for the browser tests: a migrated SQLite file, a Celery worker, the app as `make run` serves it
(server.py), headless Chromium.

Fixtures (the stack is started once for the whole tests/e2e package and stopped after its last test):
    stack   a Stack: the app's base URL and the app's and worker's logs. The environment, settings and engine of this process
            point at the stack's database, so a test can read what the app wrote. Each framework has an
            active model: the shipped default weights when they exist, otherwise a tiny one trained here.
    browser the package's headless Chromium; `new_context(browser)` is a browser profile of its own.
    app     an App for one test: a tab of a fresh browser profile (no cookie of another test or role) on the
            running app (see scripts/harness.py), which signs in as a clinician when it first opens a page.
    admin_app  the same, signing in as an admin, in a profile of its own.

The browser is Debian's chromium driven by the pinned Playwright through `executable_path`; without
/usr/bin/chromium the tests skip. With SAVE_SCREENSHOTS=1 the tests write docs/screenshots/*.png.
A failed test's report ends with the last lines of the app's and the worker's logs.
"""

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts import harness
from scripts.harness import CHROMIUM, CHROMIUM_ARGS, EXPECT_TIMEOUT_MS, VIEWPORT, App
from settings import ROOT, SAMPLE_DIR, get_settings
from tests.skip import skip_unless_required

SCREENSHOT_DIR = ROOT / "docs" / "screenshots"
APP_START_TIMEOUT_S = 120
LOG_TAIL_CHARS = 6000


@dataclass
class Stack:
    url: str
    logs: dict[str, Path]  # "streamlit" and "worker"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(stack, Stack):
        for name, path in stack.logs.items():
            report.sections.append((f"{name} log (end)", path.read_text(errors="replace")[-LOG_TAIL_CHARS:]))
    return report


def _ensure_active_models(folder: Path) -> None:
    """Register the shipped weights; for a framework without them, train a tiny real model and activate it."""
    from db.runs import get_active_model, register_model_version
    from db.schema import FRAMEWORKS
    from db.session import session_scope
    from models.inference.threads import cap_threads
    from models.training.config import make_config
    from models.training.run import run_training
    from services.model_files import file_sha256, register_default_models

    with session_scope() as session:
        register_default_models(session=session)
        missing = [fw for fw in FRAMEWORKS if get_active_model(session=session, framework=fw) is None]
    settings = get_settings()
    cap_threads(settings.torch_threads, settings.tf_threads)
    tiny = {
        "torch": {"preset": "report"},
        # From random weights (no ImageNet file here), small input: a few seconds on a CPU.
        "keras": {"preset": "improved", "image_size": 96, "tta": False},
    }
    for framework in missing:
        cfg = make_config(
            framework,
            str(SAMPLE_DIR),
            epochs=1,
            batch_size=16,
            max_images_per_class=4,
            output_dir=str(folder / f"tiny-{framework}"),
            **tiny[framework],
        )
        path = run_training(cfg).best_path
        with session_scope() as session:
            register_model_version(
                session=session,
                framework=framework,
                name=f"tiny-{framework}",
                artifact_path=path,
                sha256=file_sha256(path),
                activate=True,
            )


@pytest.fixture(scope="package")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        skip_unless_required(f"no browser at {CHROMIUM}: install Debian's chromium package (make test does, as root)")
    return CHROMIUM


@pytest.fixture(scope="package")
def stack(
    chromium: Path,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_sqlite_template: Path,
    start_worker: Callable,
) -> Iterator[Stack]:
    from db.session import reset_engine
    from worker.celery_app import celery_app

    folder = tmp_path_factory.mktemp("e2e")
    # Two allowed roots, as a deployment has: the shipped sample and a data folder of its own.
    data_root = folder / "data"
    data_root.mkdir()
    shutil.copyfile(migrated_sqlite_template, folder / "brainmri.db")
    mp = pytest.MonkeyPatch()
    mp.setenv("DATABASE_URL", f"sqlite:///{folder / 'brainmri.db'}")
    mp.setenv("ARTIFACT_DIR", str(folder / "artifacts"))
    mp.setenv("UPLOAD_DIR", str(folder / "scans"))
    mp.setenv("DICOM_SPOOL_DIR", str(folder / "dicom"))
    mp.setenv("ALLOWED_DATA_ROOTS", f"{SAMPLE_DIR}:{data_root}")
    get_settings.cache_clear()
    reset_engine()
    # Messages another module left in the session's queues name jobs of another database.
    celery_app.control.purge()
    app_process = None
    try:
        _ensure_active_models(folder)
        worker = start_worker()
        app_log = folder / "streamlit.log"
        port = harness.free_port()
        try:
            app_process = harness.start_app(port, app_log, ready_s=APP_START_TIMEOUT_S)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        url = f"http://127.0.0.1:{port}"
        yield Stack(url=url, logs={"streamlit": app_log, "worker": worker.log_path})
        worker.stop()
    finally:
        if app_process is not None:
            harness.stop_app(app_process)
        celery_app.control.purge()
        reset_engine()
        mp.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="package")
def browser(stack: Stack, chromium: Path) -> Iterator:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def new_context(browser):  # type: ignore[no-untyped-def]
    """A browser profile of its own: its cookies (a session's among them) are no other profile's."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    return context


def _tab(stack: Stack, browser, role: str) -> Iterator[App]:  # type: ignore[no-untyped-def]
    from tests.users import PASSWORD, make_actor

    actor = make_actor(role, f"e2e-{role}")
    context = new_context(browser)
    tab = context.new_page()
    screenshots = SCREENSHOT_DIR if os.environ.get("SAVE_SCREENSHOTS") == "1" else None
    yield App(tab, stack.url, screenshots, actor.username, PASSWORD)
    context.close()


@pytest.fixture
def app(stack: Stack, browser) -> Iterator[App]:  # type: ignore[no-untyped-def]
    yield from _tab(stack, browser, "clinician")


@pytest.fixture
def admin_app(stack: Stack, browser) -> Iterator[App]:  # type: ignore[no-untyped-def]
    yield from _tab(stack, browser, "admin")
