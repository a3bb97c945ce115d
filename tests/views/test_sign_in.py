"""Every page is closed until someone signs in; roles choose the pages; idle sessions and sign-outs end."""

from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest

from db.audit import AuditFilters, audit_page
from db.schema import UserSession
from db.session import session_scope
from services import auth
from settings import ROOT
from tests.users import PASSWORD, login_of, make_actor, signed_in
from ui.auth import AUTH_KEY, CODE_KEY, COOKIE_READ_KEY

HOME = str(ROOT / "Home.py")
PAGES = sorted(str(p) for p in (ROOT / "views").glob("[0-9]_*.py"))
ADMIN_PAGES = [
    p for p in PAGES if any(name in p for name in ("4_Train", "5_Leaderboard", "6_Models", "7_Users", "8_Audit"))
]


def actions() -> list[str]:
    with session_scope() as session:
        return [r.action for r in reversed(audit_page(session=session, filters=AuditFilters(), per_page=1000))]


def only_the_sign_in_form(at: AppTest) -> None:
    assert not at.exception
    assert [t.value for t in at.title] == ["Sign in"]
    assert {t.key for t in at.text_input} == {"signin_username", "signin_password"}
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.dataframe and not at.metric and not at.selectbox and not at.file_uploader


@pytest.mark.parametrize("page", [HOME, *PAGES], ids=lambda p: p.rsplit("/", 1)[-1])
def test_every_page_opened_signed_out_shows_only_the_sign_in_form(db_url, page):
    make_actor("admin")
    only_the_sign_in_form(AppTest.from_file(page, default_timeout=60).run())


def test_a_new_installation_says_how_to_create_the_first_admin(db_url):
    at = AppTest.from_file(HOME, default_timeout=30).run()
    assert any("make admin NAME=" in block.value for block in at.info)


def sign_in_through_the_form(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="signin_username").input(username)
    at.text_input(key="signin_password").input(password)
    return at.button[0].click().run()


@pytest.mark.slow
def test_signing_in_through_the_form_opens_the_app_once_the_browser_holds_its_cookie(db_url):
    make_actor("clinician", "ana")
    at = AppTest.from_file(HOME, default_timeout=60).run()
    sign_in_through_the_form(at, "ana", "wrong password")
    only_the_sign_in_form(at)
    assert [w.value for w in at.warning if "Wrong user name" in w.value]
    sign_in_through_the_form(at, "ana", PASSWORD)
    assert not at.exception
    # Signed in on the server; no page opens before the browser has traded its one-time code for the cookie.
    assert [t.value for t in at.title] == ["Signing in…"] and not at.sidebar.button
    assert auth.claim_cookie(at.session_state[CODE_KEY]) is not None  # what the page's script does (server.py)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Brain tumor MRI classification"
    assert any("Signed in as **ana** (clinician)" in c.value for c in at.sidebar.caption)
    assert actions() == ["sign_in_failed", "sign_in"]


def test_a_busy_database_at_sign_in_is_said_in_words(db_url, monkeypatch):
    import sqlite3

    from db.session import reset_engine
    from settings import get_settings

    make_actor("clinician", "ana")
    monkeypatch.setenv("DB_BUSY_TIMEOUT_S", "0.5")
    get_settings.cache_clear()
    reset_engine()
    at = AppTest.from_file(HOME, default_timeout=60).run()
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
    try:
        sign_in_through_the_form(at, "ana", PASSWORD)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    only_the_sign_in_form(at)
    assert any("The database is busy" in w.value and "Nothing was saved" in w.value for w in at.warning)


@pytest.mark.parametrize("page", ADMIN_PAGES, ids=lambda p: p.rsplit("/", 1)[-1])
def test_a_clinician_opening_an_admin_page_is_refused_and_audited(db_url, page):
    at = signed_in(AppTest.from_file(page, default_timeout=60), "clinician").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["This page is for admins."]
    assert actions() == ["refused"]


def test_a_session_idle_past_the_limit_on_the_server_is_signed_out(db_url):
    at = signed_in(AppTest.from_file(HOME, default_timeout=60)).run()
    assert at.title[0].value == "Brain tumor MRI classification"
    with session_scope() as session:
        session.get(UserSession, login_of(at)).last_seen_at -= timedelta(minutes=31)
    at.run()
    only_the_sign_in_form(at)
    assert any("after 30 minutes without activity" in w.value for w in at.warning)
    assert actions() == ["session_expired"]


@pytest.mark.slow
def test_sign_out_ends_the_session_in_every_tab(db_url):
    first = signed_in(AppTest.from_file(HOME, default_timeout=60)).run()
    # A second tab of the same browser: it found the session through the cookie.
    second = AppTest.from_file(HOME, default_timeout=60)
    second.session_state[AUTH_KEY] = {"login_id": login_of(first)}
    second.session_state[COOKIE_READ_KEY] = True
    assert second.run().title[0].value == "Brain tumor MRI classification"
    first.sidebar.button(key="signout").click().run()
    only_the_sign_in_form(first)
    second.run()
    only_the_sign_in_form(second)
    assert any("You signed out" in w.value for w in second.warning)
    assert actions() == ["sign_out"]


def test_a_user_disabled_while_signed_in_is_signed_out_at_the_next_click(db_url):
    from services import auth

    at = signed_in(AppTest.from_file(HOME, default_timeout=60), "clinician").run()
    admin = make_actor("admin")
    auth.set_disabled(admin, user_id=make_actor("clinician").user_id, disabled=True)
    at.run()
    only_the_sign_in_form(at)
    assert any("disabled" in w.value for w in at.warning)


def test_an_open_tab_notices_a_session_ended_elsewhere_without_counting_as_activity(db_url):
    at = signed_in(AppTest.from_file(HOME, default_timeout=60)).run()
    login = login_of(at)
    assert auth.is_live(login)
    with session_scope() as session:
        session.get(UserSession, login).last_seen_at -= timedelta(minutes=29)
        seen = session.get(UserSession, login).last_seen_at
    assert auth.is_live(login)  # what the tab's watch asks every few seconds
    with session_scope() as session:
        assert session.get(UserSession, login).last_seen_at == seen  # asking is not activity
    auth.sign_out(auth.session_actor(login, touch=False))
    assert not auth.is_live(login)
