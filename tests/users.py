"""Signed-in users for tests: real accounts in the test's database, and AppTests signed in as them."""

from streamlit.testing.v1 import AppTest

from db.session import session_scope
from db.users import create_user, find_user
from scripts.harness import signed_in_as
from services.auth import Actor

PASSWORD = "correct horse battery"


def make_actor(role: str = "admin", username: str | None = None, password: str = PASSWORD) -> Actor:
    """The user `username` (default: "test-<role>") of the current database, created when missing."""
    name = username or f"test-{role}"
    with session_scope() as session:
        user = find_user(session=session, username=name) or create_user(
            session=session, username=name, password=password, role=role
        )
    return Actor(user.id, user.username, user.role)


def signed_in(at: AppTest, role: str = "admin") -> AppTest:
    """`at` with a session signed in as a fresh-enough user of `role`, as the sign-in form leaves it."""
    return signed_in_as(at, make_actor(role).user_id)
