"""In a real browser: every URL shows only the sign-in form until someone signs in; roles choose the pages."""

import pytest
from playwright.sync_api import expect

from scripts.harness import PAGE_TITLES, App

pytestmark = pytest.mark.e2e


def test_every_url_opened_signed_out_shows_only_the_sign_in_form(app: App) -> None:
    for path in PAGE_TITLES:
        app.load(path)
        main = app.main()
        expect(main.get_by_role("heading", name="Sign in")).to_be_visible()
        expect(main.get_by_role("textbox", name="User name")).to_be_visible()
        expect(app.page.get_by_test_id("stSidebarNav")).to_have_count(0)
        expect(main.get_by_test_id("stFileUploader")).to_have_count(0)
        expect(main.get_by_test_id("stDataFrame")).to_have_count(0)


def test_a_wrong_password_is_refused_and_a_clinician_sees_only_the_clinic_pages(app: App, stack) -> None:  # type: ignore[no-untyped-def]
    app.load("Train")
    app.sign_in(password="not the password")
    expect(app.main().get_by_text("Wrong user name or password", exact=False)).to_be_visible()
    app.screenshot("sign-in")
    expect(app.page.get_by_test_id("stSidebarNav")).to_have_count(0)

    app.sign_in()
    nav = app.page.get_by_test_id("stSidebarNav")
    expect(nav).to_be_visible()
    for title in ("Home", "Diagnose", "Batch", "Review queue", "History"):
        expect(nav.get_by_role("link", name=title, exact=True)).to_be_visible()
    for title in ("Train", "Leaderboard", "Models", "Users", "Audit log"):
        expect(nav.get_by_role("link", name=title, exact=True)).to_have_count(0)
    expect(app.page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {app.username} (clinician)")).to_be_visible()

    app.click(app.page.get_by_role("button", name="Sign out"))
    expect(app.main().get_by_role("textbox", name="User name")).to_be_visible()
    expect(app.main().get_by_text("You signed out.")).to_be_visible()
    # Neither password, nor any hash, reached the app's or the worker's log.
    logs = " ".join(path.read_text(errors="replace") for path in stack.logs.values())
    assert "not the password" not in logs and app.password not in logs and "$argon2" not in logs


def test_an_admin_sees_the_administration_pages(admin_app: App) -> None:
    admin_app.open("Audit")
    main = admin_app.main()
    expect(main.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(main.get_by_test_id("stDataFrame")).to_be_visible()
    admin_app.screenshot("audit")
    admin_app.open("Users")
    expect(main.get_by_role("heading", name="Users")).to_be_visible()
    admin_app.screenshot("users")


def test_a_bookmarked_page_opens_after_signing_in(app: App) -> None:
    app.load("History")
    app.sign_in()
    expect(app.main().get_by_role("heading", name="History")).to_be_visible()
