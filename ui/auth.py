"""Sign-in on the page: the form, the signed-in user of this browser session, idle expiry, sign-out.

A session holds only the user's id and when it was last active; the account is read again on every run, so
disabling a user or changing their role takes effect at their next click.
"""

import time
from collections.abc import Callable

import streamlit as st

from db.session import read_scope
from db.users import count_users
from domain import AuditAction, Role, UserError
from services import auth
from services.auth import Actor, SignInError
from settings import get_settings
from ui.text import literal

AUTH_KEY = "auth"  # {"user_id": int, "last_seen": float (time.time())}
NOTICE_KEY = "signin_notice"


def _where() -> tuple[str | None, str | None]:
    """This browser session's id and the client's address, where Streamlit knows them."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    try:
        client = st.context.ip_address
    except Exception:  # outside a browser session there is no client
        client = None
    # Under AppTest the "address" is a stand-in object, not text.
    return (ctx.session_id if ctx else None), client if isinstance(client, str) else None


def signed_in() -> Actor | None:
    """The user signed in to this session, or None; a session idle past the limit is signed out here."""
    state = st.session_state.get(AUTH_KEY)
    if not state:
        return None
    session_id, client = _where()
    actor = auth.current(state["user_id"], session_id=session_id, client=client)
    if actor is None:
        st.session_state.pop(AUTH_KEY, None)
        st.session_state[NOTICE_KEY] = "Your account was disabled or removed: you were signed out."
        return None
    idle_minutes = get_settings().session_idle_minutes
    if time.time() - state["last_seen"] > idle_minutes * 60:
        auth.sign_out(actor, expired=True)
        st.session_state.pop(AUTH_KEY, None)
        st.session_state[NOTICE_KEY] = f"You were signed out after {idle_minutes} minutes without activity."
        return None
    state["last_seen"] = time.time()
    return actor


def _submit() -> None:
    username = st.session_state.get("signin_username", "")
    password = st.session_state.pop("signin_password", "")
    session_id, client = _where()
    try:
        actor = auth.sign_in(username, password, session_id=session_id, client=client)
    except SignInError as exc:
        st.session_state[NOTICE_KEY] = str(exc)
        return
    st.session_state[AUTH_KEY] = {"user_id": actor.user_id, "last_seen": time.time()}
    st.session_state.pop(NOTICE_KEY, None)


def sign_in_form() -> None:
    """The sign-in form, with why the last attempt or session ended."""
    st.title("Sign in")
    with read_scope() as session:
        nobody = count_users(session=session) == 0
    if nobody:
        st.info(
            "No user exists yet. Create the first admin on the server with `make admin NAME=yourname` "
            "(or `python -m db.users create-admin yourname`); it asks for the password."
        )
    if notice := st.session_state.get(NOTICE_KEY):
        st.warning(notice)
    with st.form("signin_form"):
        st.text_input("User name", key="signin_username", autocomplete="username")
        st.text_input("Password", type="password", key="signin_password", autocomplete="current-password")
        st.form_submit_button("Sign in", type="primary", on_click=_submit)


def require(role: str | None = None) -> Actor:
    """The signed-in user of this page run; shows the sign-in form (and stops) when there is none, and a refusal
    (audited) when the page needs a role the user lacks. Every page calls it first, so a page run on its own
    (its URL, a test) is as closed as the shell."""
    actor = signed_in()
    if actor is None:
        sign_in_form()
        st.stop()
    if role == Role.ADMIN and not actor.is_admin:
        auth.audit(actor, AuditAction.REFUSED, detail="open an admin page")
        st.error("This page is for admins.")
        st.stop()
    return actor


def sign_out() -> None:
    actor = signed_in()
    if actor is not None:
        auth.sign_out(actor)
    st.session_state.pop(AUTH_KEY, None)
    st.session_state[NOTICE_KEY] = "You signed out."


def account_box(actor: Actor) -> None:
    """Who is signed in, and the sign-out button, in the sidebar."""
    with st.sidebar:
        st.caption(f"Signed in as **{literal(actor.username)}** ({actor.role})")
        st.button("Sign out", key="signout", icon=":material/logout:", on_click=sign_out)


@st.fragment(run_every=60)
def idle_watch() -> None:
    """Once a minute, without counting as activity: a session past its idle limit goes back to the sign-in form."""
    state = st.session_state.get(AUTH_KEY)
    if state and time.time() - state["last_seen"] > get_settings().session_idle_minutes * 60:
        st.rerun(scope="app")


def job_control(control: Callable[..., str], job_id: int) -> str:
    """Cancel or re-run a job (`control` is worker.submit's cancel_job or requeue_job) as the signed-in user:
    a sentence saying what happened, or why it was refused."""
    try:
        return control(job_id, actor=signed_in())
    except UserError as exc:
        return str(exc)
