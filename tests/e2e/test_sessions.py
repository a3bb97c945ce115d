"""In a real browser: the session lives on the server and in an HttpOnly cookie; a reload keeps it, a sign-out or
a disabled account ends it in every tab, and a client's own forwarding headers are not believed."""

import subprocess
import sys
import time

import pytest
from playwright.sync_api import expect

from db.audit import AuditFilters, audit_page
from db.session import session_scope
from db.users import find_user
from scripts.harness import SETTLE_TIMEOUT_MS, App, answers, free_port, stop_app
from services import auth
from services.auth import COOKIE_NAME
from settings import ROOT
from tests.e2e.conftest import new_context
from tests.users import PASSWORD, make_actor
from ui.auth import WATCH_S

pytestmark = pytest.mark.e2e
# An open tab notices a session ended elsewhere within the watch's period (and the run it starts).
NOTICED_MS = (WATCH_S + 30) * 1000


def entries(username: str, action: str) -> list:
    with session_scope() as session:
        return audit_page(session=session, filters=AuditFilters(username=username, action=action), per_page=50)


def tab_of(context, stack, username: str) -> App:  # type: ignore[no-untyped-def]
    return App(context.new_page(), stack.url, None, username, PASSWORD)


def test_a_reload_keeps_the_tab_signed_in_and_a_sign_out_ends_every_tab(admin_app: App, stack) -> None:  # type: ignore[no-untyped-def]
    admin_app.open("Audit")
    # The page is there (and the address bar names it) before the reload.
    expect(admin_app.main().get_by_role("heading", name="Audit log")).to_be_visible()
    admin_app.page.wait_for_url("**/Audit")
    [cookie] = [c for c in admin_app.page.context.cookies() if c["name"] == COOKIE_NAME]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert COOKIE_NAME not in admin_app.page.evaluate("document.cookie")  # no script of the page can read it
    admin_app.page.reload()
    admin_app.settle()
    expect(admin_app.main().get_by_role("heading", name="Audit log")).to_be_visible()

    second = tab_of(admin_app.page.context, stack, admin_app.username)  # a new tab of the same browser
    second.load("Models")
    expect(second.page.get_by_test_id("stSidebarNav")).to_be_visible()
    admin_app.click(admin_app.page.get_by_role("button", name="Sign out"))
    expect(admin_app.main().get_by_text("You signed out.")).to_be_visible()
    # The other tab is back at the sign-in form on its own, without a click.
    expect(second.main().get_by_role("textbox", name="User name")).to_be_visible(timeout=NOTICED_MS)
    expect(second.main().get_by_text("You signed out.")).to_be_visible()
    second.load("Audit")  # and its cookie opens nothing any more
    expect(second.main().get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_download_after_the_user_was_disabled_is_refused_and_the_tab_signs_out(browser, stack) -> None:  # type: ignore[no-untyped-def]
    make_actor("admin", "e2e-ada")
    root = make_actor("admin", "e2e-root")
    context = new_context(browser)
    try:
        ada = tab_of(context, stack, "e2e-ada")
        ada.open("Audit")
        download = ada.main().get_by_role("button", name="Download these")
        expect(download).to_be_enabled()
        with session_scope() as session:
            user_id = find_user(session=session, username="e2e-ada").id
        auth.set_disabled(root, user_id=user_id, disabled=True)
        downloads = []
        ada.page.on("download", lambda started: downloads.append(started))
        download.click()
        expect(ada.main().get_by_role("textbox", name="User name")).to_be_visible(timeout=NOTICED_MS)
        expect(ada.main().get_by_text("Your account was disabled", exact=False)).to_be_visible()
        assert downloads == []
        assert any((e.detail or "").startswith("export the audit log") for e in entries("e2e-ada", "refused"))
        assert entries("e2e-ada", "export") == []
    finally:
        context.close()


def test_a_clients_own_forwarding_headers_are_not_believed(browser, stack) -> None:  # type: ignore[no-untyped-def]
    make_actor("clinician", "e2e-far")
    context = new_context(browser)
    try:
        context.set_extra_http_headers({"X-Forwarded-For": "203.0.113.9", "X-Brainmri-Client": "198.51.100.7"})
        far = tab_of(context, stack, "e2e-far")
        far.open("")
        [signed] = entries("e2e-far", "sign_in")
        assert signed.client == "127.0.0.1"  # the socket's address: no proxy is trusted (FORWARDED_ALLOW_IPS)
    finally:
        context.close()


def test_home_py_started_on_its_own_refuses_to_open(browser, stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "Home.py",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
    ]
    with (tmp_path / "streamlit.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    context = new_context(browser)
    try:
        deadline = time.monotonic() + 120
        while not answers(f"http://127.0.0.1:{port}"):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "streamlit.log").read_text()
            time.sleep(0.5)
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/", timeout=SETTLE_TIMEOUT_MS)
        expect(page.get_by_text("started without its web server's session check", exact=False)).to_be_visible()
        expect(page.get_by_role("textbox", name="User name")).to_have_count(0)
    finally:
        context.close()
        stop_app(process)
