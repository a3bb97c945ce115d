"""Who is acting: sign-in with throttling, sessions the server owns, role checks that refuse and audit, user
management.

A sign-in opens a session row (db/user_sessions.py); the browser then holds a random token for it in an
HttpOnly cookie (server.py sets it from a one-time code) and the page holds the `Actor`, which names the row.
Every service that acts calls `require_signed_in(actor, what)` or `require_admin(actor, what)` first and acts as
the Actor they return: both read the session and the account again in a transaction of their own and refuse
(audited) a session that was signed out, sat idle past SESSION_IDLE_MINUTES, outlived SESSION_MAX_HOURS, or whose
user was disabled or given another role, whatever page, callback or deferred download still holds the Actor.
"""

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from db import throttle, user_sessions, users
from db.audit import Who, record
from db.schema import utcnow
from db.secrets import hidden, keyed_hash
from db.session import DatabaseBusy, read_scope, session_scope
from db.user_sessions import SessionRow, digest
from domain import AuditAction, NotAllowed, Role, SessionEnd, UserError
from services.sign_in_throttle import client_address, refusal, throttle_keys
from settings import get_settings

# The browser's cookie; HttpOnly and SameSite=Strict (server.py).
COOKIE_NAME = "brainmri_session"
TOKEN_BYTES = 32
# The one-time code that hands the token to the browser is good for this long after sign-in.
HANDOFF_S = 120
# Activity is written at most this often per session, so a busy page costs a write per half minute, not per click.
TOUCH_EVERY_S = 30
# Counters and sessions with nothing to hold back are forgotten after this long.
FORGET_AFTER = timedelta(days=30)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """A signed-in user as the services see them: who, from which browser session and address, and the server's
    session row (`login_id`). Services trust none of it until require_* has read the row and the account again."""

    user_id: int
    username: str
    role: str
    session_id: str | None = None  # the browser session's own id (stored hashed in the audit log)
    client: str | None = None
    login_id: int | None = None

    @property
    def who(self) -> Who:
        return Who(self.user_id, self.username, self.session_id, self.client)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class SignInError(UserError):
    """A refused sign-in; the message never says whether the name exists."""


class SessionEnded(NotAllowed):
    """The session an Actor names is over (or was never opened); `reason` is a SessionEnd or None."""

    def __init__(self, reason: str | None, what: str | None = None) -> None:
        self.reason = reason
        if what is None:
            super().__init__(ended_because(reason))
        elif reason is None:
            super().__init__(f"Sign in to {what}.")
        else:
            super().__init__(f"{ended_because(reason)} Nothing was done: sign in again to {what}.")


WRONG = "Wrong user name or password (or the account is disabled)."


def ended_because(reason: str | None) -> str:
    """Why a session is over, in words."""
    settings = get_settings()
    return {
        SessionEnd.SIGNED_OUT: "You signed out.",
        SessionEnd.IDLE: f"You were signed out after {settings.session_idle_minutes} minutes without activity.",
        SessionEnd.EXPIRED: f"You were signed out {settings.session_max_hours} hours after signing in.",
        SessionEnd.DISABLED: "Your account was disabled or removed: you were signed out.",
        SessionEnd.ROLE_CHANGED: "An admin changed your role: you were signed out. Sign in again.",
        SessionEnd.PASSWORD_RESET: "An admin reset your password: you were signed out.",
    }.get(reason, "You are not signed in.")


# Signing in.


def sign_in(username: str, password: str, *, session_id: str | None = None, client: str | None = None) -> Actor:
    """The Actor of a new session for a matching, enabled account; SignInError otherwise. Every attempt is audited,
    a name nobody has only as a keyed hash.

    After `signin_max_failures` failures in a row a clinician's name (or one nobody has) is refused without
    checking the password for `signin_lockout_s`; an admin's name is never locked as a whole: the address that
    failed waits, twice as long after each further failure, up to `signin_max_delay_s`. An address is refused
    for `signin_lockout_s` after `client_max_failures` failures under any names. An admin's unlock or password
    reset clears a name's failures.
    """
    settings = get_settings()
    name = (username or "").strip().lower()[: users.MAX_USERNAME_CHARS]
    client = client_address(client)
    actor, refused = None, None
    with session_scope() as session:
        known = users.find_user(session=session, username=name) if name else None
        admin = known is not None and known.role == Role.ADMIN
        name_hash, name_key, client_key = throttle_keys(session, name, client, admin)
        counters = throttle.lock(session=session, keys={name_key: name_hash, client_key: None})
        # Read the clock once the rows are ours: an attempt that queued behind others sees their failures as past.
        now = utcnow()
        shown = name if known else (hidden(name, session=session) if name else None)
        who = Who(known.id if known else None, shown, session_id, client)
        # Each outcome is recorded, and a refusal raised only once the transaction has committed.
        if refused := refusal(counters, name_key, client_key, now):
            record(session=session, action=AuditAction.SIGN_IN_THROTTLED, who=who)
        elif (user := users.verify(session=session, username=name, password=password)) is None:
            for key in (name_key, client_key):
                counters[key].fail(now, settings.signin_lockout_s)
            record(session=session, action=AuditAction.SIGN_IN_FAILED, who=who)
            refused = WRONG
        else:
            counters[name_key].clear()
            row = user_sessions.open_session(
                session=session,
                user_id=user.id,
                role=user.role,
                client=client,
                now=now,
                expires_at=now + timedelta(hours=settings.session_max_hours),
            )
            actor = Actor(user.id, user.username, user.role, session_id, client, row.id)
            record(session=session, action=AuditAction.SIGN_IN, who=actor.who, detail=f"role {user.role}")
        throttle.save(session=session, counters=counters)
    if refused:
        raise SignInError(refused)
    _forget_old(now)
    return actor


def _forget_old(now: datetime) -> None:
    # In a transaction of its own: deleting rows another sign-in holds waits for it, and holds nothing meanwhile.
    with session_scope() as session:
        throttle.remove_old(session=session, before=now - timedelta(seconds=get_settings().signin_lockout_s) * 4)
        user_sessions.remove_old(session=session, before=now - FORGET_AFTER)


def cookie_code(actor: Actor) -> str:
    """A one-time code with which this session's browser fetches its cookie (server.py), for HANDOFF_S seconds."""
    code = secrets.token_urlsafe(TOKEN_BYTES)
    with session_scope() as session:
        issued = actor.login_id is not None and user_sessions.set_handoff(
            session=session,
            session_id=actor.login_id,
            code_hash=digest(code),
            expires_at=utcnow() + timedelta(seconds=HANDOFF_S),
        )
    if not issued:
        raise SessionEnded(None)
    return code


def claim_cookie(code: str) -> str | None:
    """The token for the session a live one-time code belongs to (the code is spent); None for any other code."""
    if not code or len(code) > 128:
        return None
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with session_scope() as session:
        row = user_sessions.claim_handoff(
            session=session, code_hash=digest(code), token_hash=digest(token), now=utcnow()
        )
    return token if row is not None else None


def has_cookie(actor: Actor) -> bool:
    """Whether the browser of this session took its cookie."""
    if actor.login_id is None:
        return False
    with read_scope() as session:
        row = user_sessions.get_session(session=session, session_id=actor.login_id)
    return row is not None and row.has_cookie


# The state of a session, read again for every action.


def _why_over(row: SessionRow | None, user: users.UserRow | None, now: datetime) -> str | None:
    """Why this session may not act (a SessionEnd), or None while it may."""
    settings = get_settings()
    if row is None:
        return SessionEnd.SIGNED_OUT
    if row.ended_reason is not None:
        return row.ended_reason
    if user is None or user.disabled:
        return SessionEnd.DISABLED
    if user.role != row.role:
        return SessionEnd.ROLE_CHANGED
    if now >= row.expires_at:
        return SessionEnd.EXPIRED
    if (now - row.last_seen_at).total_seconds() > settings.session_idle_minutes * 60:
        return SessionEnd.IDLE
    return None


def _read(login_id: int) -> tuple[SessionRow | None, users.UserRow | None]:
    with read_scope() as session:
        row = user_sessions.get_session(session=session, session_id=login_id)
        user = users.get_user(session=session, user_id=row.user_id) if row else None
    return row, user


def _end(row: SessionRow, user: users.UserRow | None, reason: str, now: datetime, who: Who) -> None:
    """End a session found over (idle, expired, or its account changed) and audit an expiry, once."""
    with session_scope() as session:
        ended = user_sessions.end_session(session=session, session_id=row.id, reason=SessionEnd(reason), now=now)
        if ended and reason in (SessionEnd.IDLE, SessionEnd.EXPIRED):
            record(session=session, action=AuditAction.SESSION_EXPIRED, who=who, detail=reason)


def session_actor(
    login_id: int, *, session_id: str | None = None, client: str | None = None, touch: bool = True
) -> Actor:
    """The Actor of a live session as its account is now (counting this as activity unless `touch` is False);
    SessionEnded, with the reason, when it is over, ending it on the server if that had not happened yet."""
    now = utcnow()
    row, user = _read(login_id)
    reason = _why_over(row, user, now)
    if reason is not None:
        if row is not None and row.ended_reason is None:
            name = user.username if user else None
            _end(row, user, reason, now, Who(row.user_id, name, session_id, client))
        raise SessionEnded(reason)
    if touch and (now - row.last_seen_at).total_seconds() >= TOUCH_EVERY_S:
        try:
            with session_scope() as session:
                user_sessions.touch(session=session, session_id=login_id, now=now)
        except DatabaseBusy:
            # Another process held the write lock throughout: this activity goes unrecorded, the next is not.
            _log.warning("session %s: activity not recorded, the database was busy", login_id)
    return Actor(user.id, user.username, user.role, session_id, client, login_id)


def is_live(login_id: int) -> bool:
    """Whether a session may still act; reading it is not activity, and ends nothing."""
    row, user = _read(login_id)
    return _why_over(row, user, utcnow()) is None


def cookie_actor(token: str, *, session_id: str | None = None, client: str | None = None) -> Actor | None:
    """The Actor of the session a browser's cookie names, None when it names none; SessionEnded when it names a
    session that is over (the reason is worth telling whoever reloads the page)."""
    if not token or len(token) > 128:
        return None
    with read_scope() as session:
        row = user_sessions.find_by_token(session=session, token_hash=digest(token))
    if row is None:
        return None
    return session_actor(row.id, session_id=session_id, client=client)


def cookie_is_live(token: str | None) -> bool:
    """Whether a request carrying this cookie comes from a live session (the web server asks, before reading a
    request's body); reading it is not activity."""
    if not token or len(token) > 128:
        return False
    with read_scope() as session:
        row = user_sessions.find_by_token(session=session, token_hash=digest(token))
        user = users.get_user(session=session, user_id=row.user_id) if row else None
    return row is not None and _why_over(row, user, utcnow()) is None


def verify(actor: Actor | None, *, touch: bool = True) -> Actor:
    """`actor` as their session and account are now; SessionEnded when the session is over."""
    if actor is None or actor.login_id is None:
        raise SessionEnded(None)
    fresh = session_actor(actor.login_id, session_id=actor.session_id, client=actor.client, touch=touch)
    if fresh.user_id != actor.user_id:
        raise SessionEnded(None)
    return fresh


def sign_out(actor: Actor | None) -> None:
    """End the actor's session in every tab; audited once."""
    if actor is None or actor.login_id is None:
        return
    with session_scope() as session:
        if user_sessions.end_session(
            session=session, session_id=actor.login_id, reason=SessionEnd.SIGNED_OUT, now=utcnow()
        ):
            record(session=session, action=AuditAction.SIGN_OUT, who=actor.who)


def audit(
    actor: Actor | None,
    action: str,
    *,
    target: str | None = None,
    patient_mrn: str | None = None,
    detail: str | None = None,
    session: Session | None = None,
) -> None:
    """Record an action: in `session`'s transaction when given (kept exactly when the action is), else in its own.
    It records; it does not check: call require_* before acting."""
    who = actor.who if actor else None
    if session is not None:
        record(session=session, action=action, who=who, target=target, patient_mrn=patient_mrn, detail=detail)
        return
    with session_scope() as own:
        record(session=own, action=action, who=who, target=target, patient_mrn=patient_mrn, detail=detail)


def require_signed_in(actor: Actor | None, what: str) -> Actor:
    """The actor as they are now, when their session is live; otherwise the refusal is audited and NotAllowed
    (SessionEnded) raised. Act as the Actor returned."""
    try:
        return verify(actor)
    except SessionEnded as exc:
        audit(actor, AuditAction.REFUSED, detail=f"{what} ({exc.reason or 'not signed in'})")
        raise SessionEnded(exc.reason, what) from None


def require_admin(actor: Actor | None, what: str) -> Actor:
    """Like require_signed_in, and the account must be an admin's now (not when the page was drawn)."""
    fresh = require_signed_in(actor, what)
    if fresh.is_admin:
        return fresh
    audit(fresh, AuditAction.REFUSED, detail=what)
    raise NotAllowed(f"Only an admin may {what}; you are signed in as {fresh.username} ({fresh.role}).")


# User management: admins only, every change audited in the same transaction.


def add_user(actor: Actor | None, *, username: str, password: str, role: str) -> users.UserRow:
    actor = require_admin(actor, "add users")
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
    """Disable (ending their sessions in every tab at once) or enable a user."""
    actor = require_admin(actor, "disable or enable users")
    with session_scope() as session:
        user = users.set_disabled(session=session, user_id=user_id, disabled=disabled)
        if disabled:
            user_sessions.end_user_sessions(session=session, user_id=user_id, reason=SessionEnd.DISABLED, now=utcnow())
        action = AuditAction.USER_DISABLED if disabled else AuditAction.USER_ENABLED
        audit(actor, action, target=f"user {user.id}", detail=user.username, session=session)
    return user


def reset_password(actor: Actor | None, *, user_id: int, password: str) -> users.UserRow:
    """Set a user's password: their other sessions end and their name's failed sign-ins are forgotten."""
    actor = require_admin(actor, "reset passwords")
    with session_scope() as session:
        user = users.set_password(session=session, user_id=user_id, password=password)
        user_sessions.end_user_sessions(
            session=session, user_id=user_id, reason=SessionEnd.PASSWORD_RESET, now=utcnow(), keep=actor.login_id
        )
        throttle.clear_name(session=session, name_hash=keyed_hash(user.username, session=session))
        audit(actor, AuditAction.PASSWORD_RESET, target=f"user {user.id}", detail=user.username, session=session)
    return user


def change_role(actor: Actor | None, *, user_id: int, role: str) -> users.UserRow:
    """Give a user another role; their sessions end, so they act under the new role only after signing in again."""
    actor = require_admin(actor, "change roles")
    with session_scope() as session:
        before = users.get_user(session=session, user_id=user_id)
        user = users.set_role(session=session, user_id=user_id, role=role)
        if before is not None and before.role != user.role:
            user_sessions.end_user_sessions(
                session=session, user_id=user_id, reason=SessionEnd.ROLE_CHANGED, now=utcnow()
            )
        detail = f"{user.username}: {before.role if before else '?'} -> {role}"
        audit(actor, AuditAction.ROLE_CHANGED, target=f"user {user.id}", detail=detail, session=session)
    return user


def unlock(actor: Actor | None, *, user_id: int) -> users.UserRow:
    """Forget a user's failed sign-ins, so a locked or delayed name may sign in at once."""
    actor = require_admin(actor, "unlock users")
    with session_scope() as session:
        user = users.get_user(session=session, user_id=user_id)
        if user is None:
            raise UserError(f"User {user_id} does not exist.")
        cleared = throttle.clear_name(session=session, name_hash=keyed_hash(user.username, session=session))
        detail = f"{user.username}: {cleared} counter(s) of failed sign-ins cleared"
        audit(actor, AuditAction.USER_UNLOCKED, target=f"user {user.id}", detail=detail, session=session)
    return user
