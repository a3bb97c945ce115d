"""Who is acting: sign-in with throttling, sign-out and expiry, role checks that refuse and audit, user management.

Every function that changes patient data or model control takes the `Actor` a page holds after sign-in, and
checks the role here (not only in what a page shows): a clinician's call to an admin-only function raises
NotAllowed and leaves an audit entry.
"""

from dataclasses import dataclass

from sqlalchemy.orm import Session

from db import users
from db.audit import Who, client_failures, failures_in_a_row, record
from db.session import session_scope
from domain import AuditAction, NotAllowed, Role, UserError
from settings import get_settings


@dataclass(frozen=True)
class Actor:
    """A signed-in user as the services see them, with the session they act from."""

    user_id: int
    username: str
    role: str
    session_id: str | None = None
    client: str | None = None

    @property
    def who(self) -> Who:
        return Who(self.user_id, self.username, self.session_id, self.client)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class SignInError(UserError):
    """A refused sign-in; the message never says whether the name exists."""


WRONG = "Wrong user name or password (or the account is disabled)."


def sign_in(username: str, password: str, *, session_id: str | None = None, client: str | None = None) -> Actor:
    """The Actor for a matching, enabled account; SignInError otherwise. Every attempt is audited.

    After `signin_max_failures` failures in a row a name is refused without checking the password until
    `signin_lockout_s` has passed; a client address likewise after `client_max_failures` failures.
    """
    settings = get_settings()
    name = (username or "").strip().lower()[: users.MAX_USERNAME_CHARS]
    attempt = Who(None, name or None, session_id, client)
    actor = None
    with session_scope() as session:
        throttled = failures_in_a_row(
            session=session, username=name, within_s=settings.signin_lockout_s
        ) >= settings.signin_max_failures or (
            client is not None
            and client_failures(session=session, client=client, within_s=settings.signin_lockout_s)
            >= settings.client_max_failures
        )
        # Each outcome is recorded, and the refusal raised only once the transaction has committed.
        if throttled:
            record(session=session, action=AuditAction.SIGN_IN_THROTTLED, who=attempt)
        elif (user := users.verify(session=session, username=name, password=password)) is None:
            known = users.find_user(session=session, username=name)
            who = Who(known.id if known else None, name or None, session_id, client)
            record(session=session, action=AuditAction.SIGN_IN_FAILED, who=who)
        else:
            actor = Actor(user.id, user.username, user.role, session_id, client)
            record(session=session, action=AuditAction.SIGN_IN, who=actor.who, detail=f"role {user.role}")
    if throttled:
        minutes = max(1, round(settings.signin_lockout_s / 60))
        raise SignInError(f"Too many failed sign-ins: wait {minutes} minutes and try again, or ask an admin.")
    if actor is None:
        raise SignInError(WRONG)
    return actor


def current(user_id: int, *, session_id: str | None = None, client: str | None = None) -> Actor | None:
    """The Actor for a user id a session holds, as the account is now; None when it is gone or disabled."""
    from db.session import read_scope

    with read_scope() as session:
        user = users.get_user(session=session, user_id=user_id)
    if user is None or user.disabled:
        return None
    return Actor(user.id, user.username, user.role, session_id, client)


def sign_out(actor: Actor, *, expired: bool = False) -> None:
    action = AuditAction.SESSION_EXPIRED if expired else AuditAction.SIGN_OUT
    audit(actor, action)


def audit(
    actor: Actor | None,
    action: str,
    *,
    target: str | None = None,
    patient_mrn: str | None = None,
    detail: str | None = None,
    session: Session | None = None,
) -> None:
    """Record an action: in `session`'s transaction when given (kept exactly when the action is), else in its own."""
    who = actor.who if actor else None
    if session is not None:
        record(session=session, action=action, who=who, target=target, patient_mrn=patient_mrn, detail=detail)
        return
    with session_scope() as own:
        record(session=own, action=action, who=who, target=target, patient_mrn=patient_mrn, detail=detail)


def require_admin(actor: Actor | None, what: str) -> Actor:
    """The actor when they are a signed-in admin; otherwise the refusal is audited and NotAllowed raised."""
    if actor is not None and actor.is_admin:
        return actor
    audit(actor, AuditAction.REFUSED, detail=what)
    if actor is None:
        raise NotAllowed(f"Sign in to {what}.")
    raise NotAllowed(f"Only an admin may {what}; you are signed in as {actor.username} ({actor.role}).")


def require_signed_in(actor: Actor | None, what: str) -> Actor:
    if actor is not None:
        return actor
    audit(None, AuditAction.REFUSED, detail=what)
    raise NotAllowed(f"Sign in to {what}.")


# User management: admins only, every change audited in the same transaction.


def add_user(actor: Actor | None, *, username: str, password: str, role: str) -> users.UserRow:
    require_admin(actor, "add users")
    with session_scope() as session:
        user = users.create_user(session=session, username=username, password=password, role=role)
        audit(
            actor,
            AuditAction.USER_CREATED,
            target=f"user {user.id}",
            detail=f"{user.username} ({role})",
            session=session,
        )
    return user


def set_disabled(actor: Actor | None, *, user_id: int, disabled: bool) -> users.UserRow:
    require_admin(actor, "disable or enable users")
    with session_scope() as session:
        user = users.set_disabled(session=session, user_id=user_id, disabled=disabled)
        action = AuditAction.USER_DISABLED if disabled else AuditAction.USER_ENABLED
        audit(actor, action, target=f"user {user.id}", detail=user.username, session=session)
    return user


def reset_password(actor: Actor | None, *, user_id: int, password: str) -> users.UserRow:
    require_admin(actor, "reset passwords")
    with session_scope() as session:
        user = users.set_password(session=session, user_id=user_id, password=password)
        audit(actor, AuditAction.PASSWORD_RESET, target=f"user {user.id}", detail=user.username, session=session)
    return user


def change_role(actor: Actor | None, *, user_id: int, role: str) -> users.UserRow:
    require_admin(actor, "change roles")
    with session_scope() as session:
        before = users.get_user(session=session, user_id=user_id)
        user = users.set_role(session=session, user_id=user_id, role=role)
        detail = f"{user.username}: {before.role if before else '?'} -> {role}"
        audit(actor, AuditAction.ROLE_CHANGED, target=f"user {user.id}", detail=detail, session=session)
    return user
