"""Signed-in users for tests: real accounts and real server-side sessions in the test's database, and AppTests
signed in as them."""

from datetime import timedelta

from streamlit.testing.v1 import AppTest

from db.schema import utcnow
from db.session import session_scope
from db.user_sessions import open_session
from db.users import create_user, find_user
from scripts.harness import signed_in_as
from services.auth import Actor
from ui.auth import AUTH_KEY

PASSWORD = "correct horse battery"


def make_actor(role: str = "admin", username: str | None = None, password: str = PASSWORD) -> Actor:
    """The user `username` (default: "test-<role>") of the current database, created when missing, with a new
    live session of theirs, as a sign-in leaves one (without the sign-in's audit entry)."""
    name = username or f"test-{role}"
    with session_scope() as session:
        user = find_user(session=session, username=name) or create_user(
            session=session, username=name, password=password, role=role
        )
        now = utcnow()
        row = open_session(
            session=session, user_id=user.id, role=user.role, client=None, now=now, expires_at=now + timedelta(hours=8)
        )
    return Actor(user.id, user.username, user.role, login_id=row.id)


def signed_in(at: AppTest, role: str = "admin", username: str | None = None) -> AppTest:
    """`at` with a tab signed in as a user of `role` (default name "test-<role>"), as the sign-in form leaves it
    once the browser holds its cookie; `login_of(at)` is the id of its server-side session."""
    return signed_in_as(at, make_actor(role, username))


def login_of(at: AppTest) -> int:
    return at.session_state[AUTH_KEY]["login_id"]
