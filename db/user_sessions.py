"""Signed-in sessions as the server keeps them: opened at sign-in, found by the hash of the browser's token,
ended by sign-out, idleness, age, or a change to the account (every tab of that session at once)."""

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from db.schema import UserSession
from domain import SessionEnd


@dataclass(frozen=True)
class SessionRow:
    """A session as the services see one: never its hashes."""

    id: int
    user_id: int
    role: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    client: str | None
    ended_at: datetime | None
    ended_reason: str | None
    has_cookie: bool  # the browser took its token


def _row(s: UserSession) -> SessionRow:
    return SessionRow(
        s.id,
        s.user_id,
        s.role,
        s.created_at,
        s.last_seen_at,
        s.expires_at,
        s.client,
        s.ended_at,
        s.ended_reason,
        s.token_hash is not None,
    )


def digest(secret: str) -> str:
    """What is stored of a token or a one-time code: its sha256 (both are 256 random bits, so no key is needed)."""
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def open_session(
    *, session: Session, user_id: int, role: str, client: str | None, now: datetime, expires_at: datetime
) -> SessionRow:
    row = UserSession(
        user_id=user_id, role=role, client=client, created_at=now, last_seen_at=now, expires_at=expires_at
    )
    session.add(row)
    session.flush()
    return _row(row)


def get_session(*, session: Session, session_id: int) -> SessionRow | None:
    row = session.get(UserSession, session_id)
    return _row(row) if row else None


def find_by_token(*, session: Session, token_hash: str) -> SessionRow | None:
    row = session.scalar(select(UserSession).where(UserSession.token_hash == token_hash))
    return _row(row) if row else None


def set_handoff(*, session: Session, session_id: int, code_hash: str, expires_at: datetime) -> bool:
    """Attach a one-time code to a session that has not ended; False when it has."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.id == session_id, UserSession.ended_at.is_(None))
        .values(handoff_hash=code_hash, handoff_expires_at=expires_at)
    )
    return result.rowcount == 1


def claim_handoff(*, session: Session, code_hash: str, token_hash: str, now: datetime) -> SessionRow | None:
    """Trade a live one-time code for a new token: the code works once, before it expires, on a session that has
    not ended. The session's earlier token (another browser's cookie) stops working."""
    row = session.scalar(
        select(UserSession)
        .where(
            UserSession.handoff_hash == code_hash,
            UserSession.handoff_expires_at > now,
            UserSession.ended_at.is_(None),
        )
        .with_for_update()
    )
    if row is None:
        return None
    row.handoff_hash, row.handoff_expires_at, row.token_hash = None, None, token_hash
    session.flush()
    return _row(row)


def touch(*, session: Session, session_id: int, now: datetime) -> None:
    """Record activity (the idle limit counts from here)."""
    session.execute(
        update(UserSession).where(UserSession.id == session_id, UserSession.ended_at.is_(None)).values(last_seen_at=now)
    )


def end_session(*, session: Session, session_id: int, reason: SessionEnd, now: datetime) -> bool:
    """End one session; False when it had already ended (so its end is audited once)."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.id == session_id, UserSession.ended_at.is_(None))
        .values(ended_at=now, ended_reason=reason.value, handoff_hash=None)
    )
    return result.rowcount == 1


def end_user_sessions(
    *, session: Session, user_id: int, reason: SessionEnd, now: datetime, keep: int | None = None
) -> int:
    """End every live session of a user (but `keep`); returns how many were live."""
    query = update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep)
    result = session.execute(query.values(ended_at=now, ended_reason=reason.value, handoff_hash=None))
    return result.rowcount


def remove_old(*, session: Session, before: datetime) -> int:
    """Forget sessions that ended, or expired, before `before` (the audit log keeps their sign-in and end)."""
    result = session.execute(
        delete(UserSession).where(
            or_(UserSession.ended_at < before, UserSession.expires_at < before, UserSession.last_seen_at < before)
        )
    )
    return result.rowcount
