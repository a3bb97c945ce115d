"""Users (admins): add people, disable or enable them, reset a password, change a role, unlock sign-ins."""

import pandas as pd
import streamlit as st

from db.session import read_scope
from db.users import MIN_PASSWORD_CHARS, list_users
from domain import Role, UserError
from services import auth
from services.clock import format_time, zone_name
from services.sign_in_throttle import sign_in_holds
from ui.auth import require
from ui.text import literal

ACTOR = require(Role.ADMIN)
NOTICE_KEY = "users_notice"
ROLES = [r.value for r in Role]

st.title("Users")
st.caption(
    "Clinicians diagnose, run batches and browse and review the history. Admins also train, promote and "
    "download models, delete records, manage users and read the audit log. Users are never deleted (the audit "
    "log names them): disable them instead. The last enabled admin can't be disabled or lose the role. Disabling "
    "a user, changing their role or resetting their password signs them out at once, in every tab."
)


def apply_user_change(change, success: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """Run a user change as the signed-in admin; what happened or why not is shown after the redraw."""
    try:
        user = change(ACTOR, **kwargs)
    except UserError as exc:
        st.session_state[NOTICE_KEY] = ("error", str(exc))
        return
    st.session_state[NOTICE_KEY] = ("success", success.format(name=user.username))


if notice := st.session_state.pop(NOTICE_KEY, None):
    kind, text = notice
    (st.success if kind == "success" else st.error)(literal(text))

with read_scope() as session:
    users = list_users(session=session)
holds = sign_in_holds(users)


def hold_text(user_id: int) -> str:
    hold = holds.get(user_id)
    if hold is None:
        return ""
    held = "delayed from one address" if hold.per_address else "locked"
    return f"{held} until {format_time(hold.until, seconds=True, zone=False)} ({hold.failures} failures in a row)"


st.dataframe(
    pd.DataFrame(
        [
            {
                "user": u.username,
                "role": u.role,
                "enabled": not u.disabled,
                "sign-ins": hold_text(u.id),
                f"created ({zone_name()})": format_time(u.created_at, zone=False),
                f"password changed ({zone_name()})": format_time(u.password_changed_at, zone=False),
            }
            for u in users
        ]
    ),
    hide_index=True,
    key="users_table",
)

st.subheader("Add a user")
with st.form("users_add", clear_on_submit=True):
    name = st.text_input("User name", max_chars=64, key="users_add_name")
    password = st.text_input(
        "Initial password", type="password", key="users_add_password", help=f"At least {MIN_PASSWORD_CHARS} characters."
    )
    role = st.radio("Role", ROLES, index=ROLES.index(Role.CLINICIAN), horizontal=True, key="users_add_role")
    if st.form_submit_button("Add user", type="primary"):
        apply_user_change(auth.add_user, "{name} was added.", username=name, password=password, role=role)
        st.rerun()

if users:
    st.subheader("Change a user")
    by_id = {u.id: u for u in users}
    chosen = st.selectbox(
        "User",
        list(by_id),
        format_func=lambda i: f"{by_id[i].username} ({by_id[i].role}{', disabled' if by_id[i].disabled else ''})",
        key="users_pick",
    )
    user = by_id[chosen]
    role_col, state_col = st.columns(2)
    with role_col:
        new_role = st.radio("Role", ROLES, index=ROLES.index(user.role), horizontal=True, key=f"users_role_{user.id}")
        st.button(
            "Change role",
            key=f"users_role_apply_{user.id}",
            disabled=new_role == user.role,
            on_click=apply_user_change,
            args=(auth.change_role, "{name} is now " + new_role + "."),
            kwargs={"user_id": user.id, "role": new_role},
        )
    with state_col:
        st.button(
            "Enable" if user.disabled else "Disable",
            key=f"users_disable_{user.id}",
            on_click=apply_user_change,
            args=(auth.set_disabled, "{name} is " + ("enabled." if user.disabled else "disabled.")),
            kwargs={"user_id": user.id, "disabled": not user.disabled},
        )
    if user.id in holds:
        st.warning(f"{literal(user.username)}'s sign-ins are {literal(hold_text(user.id))}.")
        st.button(
            "Unlock sign-ins",
            key=f"users_unlock_{user.id}",
            on_click=apply_user_change,
            args=(auth.unlock, "{name} may sign in again at once."),
            kwargs={"user_id": user.id},
        )
    with st.form(f"users_reset_{user.id}", clear_on_submit=True):
        new_password = st.text_input("New password", type="password", key=f"users_reset_password_{user.id}")
        if st.form_submit_button("Reset password"):
            apply_user_change(
                auth.reset_password,
                "{name}'s password was reset; their failed sign-ins are forgotten.",
                user_id=user.id,
                password=new_password,
            )
            st.rerun()
