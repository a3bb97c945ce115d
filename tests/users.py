"""Signed-in users for tests: real accounts in the test's database, and AppTests signed in as them."""

import time

from streamlit.testing.v1 import AppTest

from db.session import session_scope
from db.users import create_user, find_user
from services.auth import Actor
from ui.auth import AUTH_KEY

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
    actor = make_actor(role)
    at.session_state[AUTH_KEY] = {"user_id": actor.user_id, "last_seen": time.time()}
    return at
