"""The Users page changes accounts as an admin; the Audit log page filters, pages and exports the log."""

import pytest
from streamlit.testing.v1 import AppTest

from db.history import PredictionFilters
from db.session import session_scope
from db.users import find_user
from services.auth import SignInError, sign_in
from settings import ROOT
from tests.users import PASSWORD, make_actor, signed_in
from ui.text import literal

USERS = str(ROOT / "views" / "7_Users.py")
AUDIT = str(ROOT / "views" / "8_Audit.py")


def user(name: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return find_user(session=session, username=name)


@pytest.mark.slow
def test_an_admin_adds_a_clinician_disables_them_and_cannot_disable_themselves(db_url):
    at = signed_in(AppTest.from_file(USERS, default_timeout=60)).run()
    at.text_input(key="users_add_name").input("nora")
    at.text_input(key="users_add_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [literal("nora was added.")]
    assert user("nora").role == "clinician" and sign_in("nora", PASSWORD).username == "nora"

    at.selectbox(key="users_pick").select(user("nora").id).run()
    at.button(key=f"users_disable_{user('nora').id}").click().run()
    assert user("nora").disabled
    try:
        sign_in("nora", PASSWORD)
        raise AssertionError("a disabled user signed in")
    except SignInError:
        pass

    admin = user("test-admin")
    at.selectbox(key="users_pick").select(admin.id).run()
    at.button(key=f"users_disable_{admin.id}").click().run()
    assert [e.value for e in at.error] == [
        literal("test-admin is the last enabled admin: make another user admin first.")
    ]
    assert not user("test-admin").disabled


@pytest.mark.slow
def test_the_audit_page_filters_by_user_and_action(db_url):
    make_actor("clinician", "ana")
    for name in ("ana", "ben"):
        try:
            sign_in(name, "wrong password")
        except SignInError:
            pass
    at = signed_in(AppTest.from_file(AUDIT, default_timeout=60)).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["Action"]) == {"failed sign-in"}
    said = list(table["What happened"])
    assert "ana failed to sign in (wrong password, or the account is disabled)." in said
    # "ben" is nobody's name: it is stored only as a keyed hash, and found when typed.
    [nobody] = [s for s in said if not s.startswith("ana")]
    assert nobody.startswith("A user name nobody has (#") and "ben" not in nobody
    at.text_input(key="audit_user").input("ben").run()
    assert list(at.dataframe[0].value["What happened"]) == [nobody]
    at.text_input(key="audit_user").input("").run()
    at.selectbox(key="audit_action").select("sign_in").run()
    assert at.dataframe[0].value.empty


def test_the_audit_page_reads_as_sentences_in_the_clinics_time_zone_and_checks_the_chain(db_url, monkeypatch):
    from datetime import datetime

    from db.audit import AuditFilters, audit_page
    from services import records
    from settings import get_settings

    monkeypatch.setenv("TIME_ZONE", "Europe/Paris")
    get_settings.cache_clear()
    clinician = make_actor("clinician", "cleo")
    records.export_predictions(clinician, filters=PredictionFilters(labels=("glioma",), needs_review=True))
    at = signed_in(AppTest.from_file(AUDIT, default_timeout=60)).run()
    assert not at.exception
    table = at.dataframe[0].value
    [said] = table["What happened"]
    assert (
        said
        == "cleo exported predictions CSV: 0 prediction(s) of 0 patient(s); filters: labels glioma; needs review yes."
    )
    with session_scope() as session:
        [entry] = audit_page(session=session, filters=AuditFilters())
    paris = datetime.fromisoformat(table["When (Europe/Paris)"][0].rsplit(" ", 1)[0])
    assert (paris - entry.at.replace(microsecond=0)).total_seconds() == 3600  # UTC+1 in winter
    assert "(Europe/Paris)" in at.date_input(key="audit_dates").label
    at.button(key="audit_check").click().run()
    assert [s.value for s in at.success] == [literal("audit log intact: 1 entries, each chained to the one before")]


@pytest.mark.slow
def test_the_users_page_shows_a_locked_name_and_an_unlock_lifts_it(db_url):
    nora = make_actor("clinician", "nora")
    for _ in range(5):
        try:
            sign_in("nora", "a wrong guess")
        except SignInError:
            pass
    at = signed_in(AppTest.from_file(USERS, default_timeout=60)).run()
    table = at.dataframe[0].value
    assert list(table[table["user"] == "nora"]["sign-ins"])[0].startswith("locked until ")
    at.selectbox(key="users_pick").select(nora.user_id).run()
    at.button(key=f"users_unlock_{nora.user_id}").click().run()
    assert not at.exception
    assert [s.value for s in at.success] == [literal("nora may sign in again at once.")]
    assert list(at.dataframe[0].value["sign-ins"]) == ["", ""]
    assert sign_in("nora", PASSWORD).username == "nora"


def test_every_audit_action_has_a_name_and_a_sentence():
    from domain import AuditAction
    from ui.audit_view import ACTION_NAMES, SENTENCES

    assert set(ACTION_NAMES) == set(SENTENCES) == set(AuditAction)
