"""Sign-in on the page: the form, the signed-in user of this browser session, idle expiry, sign-out.

A browser session (a tab) holds only the id of its server-side session (services/auth.py); the session and the
account are read again on every run, and again by every service that acts. After the form's sign-in the browser
trades a one-time code for its HttpOnly cookie (server.py) before any page opens, so that a reload of the tab, or
a new tab, finds the session again, and so that uploads and media are served to it.
"""

import logging
from collections.abc import Callable

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from db.session import read_scope
from db.users import count_users
from domain import AuditAction, Role, UserError
from services import auth
from services.auth import COOKIE_NAME, Actor, SessionEnded
from services.sign_in_throttle import client_address
from ui.text import literal

AUTH_KEY = "auth"  # {"login_id": int}: the server's session of this tab
CODE_KEY = "auth_cookie_code"  # the one-time code this tab's browser trades for its cookie, until it has
COOKIE_READ_KEY = "auth_cookie_read"  # this tab looked at the browser's cookie once
NOTICE_KEY = "signin_notice"
# Set by server.py on every request from the address its socket (or a trusted proxy) saw; a browser's own
# header of that name never gets through.
CLIENT_HEADER = "X-Brainmri-Client"
COOKIE_ROUTE = "/api/session"
# How often an open tab asks the server whether its session still holds (ended elsewhere, idle, disabled).
WATCH_S = 15

_log = logging.getLogger(__name__)

_JS = """
export default function ({ data, setTriggerValue }) {
  if (!data || !data.code) return;
  fetch(data.route, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "text/plain" },
                      body: data.code })
    .then((response) => setTriggerValue("claimed", response.ok ? "ok" : `refused ${response.status}`))
    .catch(() => setTriggerValue("claimed", "failed"));
}
"""
_cookie_component = st.components.v2.component("brainmri_session_cookie", js=_JS)


def _where() -> tuple[str | None, str | None]:
    """This browser session's id and the client's address as the web server saw it, where they are known."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    client = _text(st.context.headers.get(CLIENT_HEADER)) if ctx else None
    return (ctx.session_id if ctx else None), client_address(client)


def _text(value: object) -> str | None:
    # Under AppTest the request's headers and cookies are stand-in objects, not text.
    return value if isinstance(value, str) else None


def behind_server() -> bool:
    """False in a browser session that did not come through server.py (Streamlit started on its own, where its
    upload and media routes would answer anyone): such a start must not serve patient data."""
    headers = st.context.headers
    return _text(headers.get("Host")) is None or _text(headers.get(CLIENT_HEADER)) is not None


def _from_cookie(session_id: str | None, client: str | None) -> Actor | None:
    """The session the browser's cookie names, looked at once per tab (a reload or a new tab is a new one)."""
    if st.session_state.get(COOKIE_READ_KEY):
        return None
    st.session_state[COOKIE_READ_KEY] = True
    token = _text(st.context.cookies.get(COOKIE_NAME))
    if not token:
        return None
    try:
        actor = auth.cookie_actor(token, session_id=session_id, client=client)
    except SessionEnded as exc:
        st.session_state[NOTICE_KEY] = str(exc)
        return None
    if actor is not None:
        st.session_state[AUTH_KEY] = {"login_id": actor.login_id}
    return actor


def signed_in() -> Actor | None:
    """The user signed in to this tab, as their account is now, or None; a session found over (signed out in
    another tab, idle, expired, disabled, role changed) is left here with the reason as the sign-in form's notice."""
    session_id, client = _where()
    state = st.session_state.get(AUTH_KEY)
    if not state:
        return _from_cookie(session_id, client)
    try:
        return auth.session_actor(state["login_id"], session_id=session_id, client=client)
    except SessionEnded as exc:
        st.session_state.pop(AUTH_KEY, None)
        st.session_state.pop(CODE_KEY, None)
        st.session_state[NOTICE_KEY] = str(exc)
        return None


def _submit() -> None:
    username = st.session_state.get("signin_username", "")
    password = st.session_state.pop("signin_password", "")
    session_id, client = _where()
    try:
        actor = auth.sign_in(username, password, session_id=session_id, client=client)
        code = auth.cookie_code(actor)
    except UserError as exc:  # a refusal, a busy database (DatabaseBusy), a session ended at once
        st.session_state[NOTICE_KEY] = str(exc)
        return
    except SQLAlchemyError:
        _log.exception("sign-in could not reach the database")
        st.session_state[NOTICE_KEY] = (
            "The database could not be reached, so nobody can sign in right now: nothing was checked or changed. "
            "Try again in a moment; if this goes on, tell whoever runs the system."
        )
        return
    st.session_state[AUTH_KEY] = {"login_id": actor.login_id}
    st.session_state[CODE_KEY] = code
    st.session_state[COOKIE_READ_KEY] = True
    st.session_state.pop(NOTICE_KEY, None)


def cookie_ready(actor: Actor) -> bool:
    """Whether this tab's browser holds its session's cookie; until it does, the code is handed to it (the page
    shows only that step), so no page opens before uploads and media would be served to the browser."""
    if CODE_KEY not in st.session_state:
        return True
    if auth.has_cookie(actor):
        del st.session_state[CODE_KEY]
        return True
    st.title("Signing in…")
    result = _cookie_component(
        key="auth_cookie", data={"code": st.session_state[CODE_KEY], "route": COOKIE_ROUTE}, on_claimed_change=_noop
    )
    outcome = getattr(result, "claimed", None)
    if outcome is not None and outcome != "ok":
        st.error(
            "This browser did not take the app's session cookie, which signing in needs: allow cookies for this "
            "site and sign in again."
        )
        st.button("Back to the sign-in form", key="auth_cookie_back", on_click=sign_out)
    return False


def _noop() -> None:
    # The cookie's outcome reruns the page; what it says is read from the result.
    pass


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
        st.warning(literal(notice))
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
    """End this tab's session on the server, which ends it in every tab of the browser."""
    actor = signed_in()
    if actor is not None:
        auth.sign_out(actor)
    st.session_state.pop(AUTH_KEY, None)
    st.session_state.pop(CODE_KEY, None)
    st.session_state[COOKIE_READ_KEY] = True
    st.session_state[NOTICE_KEY] = "You signed out."


def account_box(actor: Actor) -> None:
    """Who is signed in, and the sign-out button, in the sidebar."""
    with st.sidebar:
        st.caption(f"Signed in as **{literal(actor.username)}** ({actor.role})")
        st.button("Sign out", key="signout", icon=":material/logout:", on_click=sign_out)


@st.fragment(run_every=WATCH_S)
def session_watch() -> None:
    """Every few seconds, without counting as activity: a session that ended anywhere (sign-out in another tab,
    idle past the limit, its user disabled or given another role) takes this tab back to the sign-in form."""
    state = st.session_state.get(AUTH_KEY)
    if state and not auth.is_live(state["login_id"]):
        st.rerun(scope="app")


def job_control(control: Callable[..., str], job_id: int) -> str:
    """Cancel or re-run a job (`control` is worker.submit's cancel_job or requeue_job) as the signed-in user:
    a sentence saying what happened, or why it was refused."""
    try:
        return control(job_id, actor=signed_in())
    except UserError as exc:
        return str(exc)
