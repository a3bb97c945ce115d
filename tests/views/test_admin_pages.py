"""The Users page changes accounts as an admin; the Audit log page filters, pages and exports the log."""

from streamlit.testing.v1 import AppTest

from db.session import session_scope
from db.users import find_user
from services.auth import SignInError, sign_in
from settings import ROOT
from tests.users import PASSWORD, signed_in
from ui.text import literal

USERS = str(ROOT / "views" / "7_Users.py")
AUDIT = str(ROOT / "views" / "8_Audit.py")


def user(name: str):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return find_user(session=session, username=name)


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


def test_the_audit_page_filters_by_user_and_action(db_url):
    for name in ("ana", "ben"):
        try:
            sign_in(name, "wrong password")
        except SignInError:
            pass
    at = signed_in(AppTest.from_file(AUDIT, default_timeout=60)).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["username"]) == {"ana", "ben"} and set(table["action"]) == {"sign_in_failed"}
    at.text_input(key="audit_user").input("ben").run()
    table = at.dataframe[0].value
    assert list(table["username"]) == ["ben"]
    at.text_input(key="audit_user").input("").run()
    at.selectbox(key="audit_action").select("sign_in").run()
    assert at.dataframe[0].value.empty
