"""The people who sign in: argon2 password hashes, roles, disabling; `python -m db.users create-admin NAME`,
`python -m db.users unlock NAME` (on the server: forget a name's failed sign-ins).

No default account exists anywhere: the first admin is created with the command below, which reads the
password from the terminal (asked twice) or, when stdin is not a terminal, from its first line.
"""

import argparse
import getpass
import sys
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.audit import record
from db.schema import User, utcnow
from domain import Role, UserError

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 256
MAX_USERNAME_CHARS = 64
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")

_hasher = PasswordHasher()
# Verified against when a name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class UserRow:
    """A user as pages see one: never the hash."""

    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    password_changed_at: datetime


def _row(user: User) -> UserRow:
    return UserRow(user.id, user.username, user.role, user.disabled, user.created_at, user.password_changed_at)


def check_username(username: str) -> str:
    """The name as stored (trimmed, lower case); UserError when it cannot be one."""
    name = (username or "").strip().lower()
    if not name:
        raise UserError("Enter a user name.")
    if len(name) > MAX_USERNAME_CHARS:
        raise UserError(f"A user name has at most {MAX_USERNAME_CHARS} characters.")
    if not set(name) <= USERNAME_CHARS:
        raise UserError("A user name may hold only letters, digits and . _ - @")
    return name


def check_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_CHARS:
        raise UserError(f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserError(f"A password has at most {MAX_PASSWORD_CHARS} characters.")
    return password


def create_user(*, session: Session, username: str, password: str, role: str) -> UserRow:
    """Add a user; UserError for a taken or malformed name, a short password or an unknown role."""
    name = check_username(username)
    if role not in set(Role):
        raise UserError(f"Unknown role {role!r}: choose admin or clinician.")
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise UserError(f"The user name {name!r} is taken.")
    user = User(username=name, password_hash=_hasher.hash(check_password(password)), role=role, disabled=False)
    session.add(user)
    session.flush()
    return _row(user)


def verify(*, session: Session, username: str, password: str) -> UserRow | None:
    """The user when the name and password match an enabled account, else None (in about the same time)."""
    user = session.scalar(select(User).where(User.username == (username or "").strip().lower()))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return _row(user)


def get_user(*, session: Session, user_id: int) -> UserRow | None:
    user = session.get(User, user_id)
    return _row(user) if user else None


def find_user(*, session: Session, username: str) -> UserRow | None:
    user = session.scalar(select(User).where(User.username == (username or "").strip().lower()))
    return _row(user) if user else None


def list_users(*, session: Session) -> list[UserRow]:
    return [_row(u) for u in session.scalars(select(User).order_by(User.username))]


def count_users(*, session: Session) -> int:
    return session.scalar(select(func.count(User.id))) or 0


def _enabled_admins(session: Session) -> int:
    return session.scalar(select(func.count(User.id)).where(User.role == Role.ADMIN, User.disabled.is_(False))) or 0


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise UserError(f"User {user_id} does not exist.")
    return user


def set_disabled(*, session: Session, user_id: int, disabled: bool) -> UserRow:
    """Disable or enable a user; the last enabled admin cannot be disabled."""
    user = _user(session, user_id)
    if disabled and user.role == Role.ADMIN and not user.disabled and _enabled_admins(session) <= 1:
        raise UserError(f"{user.username} is the last enabled admin: make another user admin first.")
    user.disabled = disabled
    session.flush()
    return _row(user)


def set_role(*, session: Session, user_id: int, role: str) -> UserRow:
    """Change a user's role; the last enabled admin keeps theirs."""
    if role not in set(Role):
        raise UserError(f"Unknown role {role!r}: choose admin or clinician.")
    user = _user(session, user_id)
    if user.role == Role.ADMIN and role != Role.ADMIN and not user.disabled and _enabled_admins(session) <= 1:
        raise UserError(f"{user.username} is the last enabled admin: make another user admin first.")
    user.role = role
    session.flush()
    return _row(user)


def set_password(*, session: Session, user_id: int, password: str) -> UserRow:
    user = _user(session, user_id)
    user.password_hash = _hasher.hash(check_password(password))
    user.password_changed_at = utcnow()
    session.flush()
    return _row(user)


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise UserError("The two passwords differ.")
    return first


def _unlock(session: Session, username: str) -> int:
    from db.secrets import keyed_hash
    from db.throttle import clear_name

    user = find_user(session=session, username=username)
    if user is None:
        raise UserError(f"No user is called {username!r}.")
    cleared = clear_name(session=session, name_hash=keyed_hash(user.username, session=session))
    detail = f"{user.username}: {cleared} counter(s) of failed sign-ins cleared (command line)"
    record(session=session, action="user_unlocked", who=None, target=f"user {user.id}", detail=detail)
    print(f"{user.username} may sign in again at once")
    return 0


def main(argv: list[str] | None = None) -> int:
    from db.session import session_scope

    parser = argparse.ArgumentParser(prog="python -m db.users", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-admin", help="add an admin (password from the terminal or stdin)")
    create.add_argument("username")
    commands.add_parser("count", help="print how many users exist")
    unlock = commands.add_parser("unlock", help="forget a user's failed sign-ins, so the name may sign in at once")
    unlock.add_argument("username")
    args = parser.parse_args(argv)
    try:
        with session_scope() as session:
            if args.command == "count":
                print(count_users(session=session))
                return 0
            if args.command == "unlock":
                return _unlock(session, args.username)
            name = check_username(args.username)
            user = create_user(session=session, username=name, password=_read_password(), role=Role.ADMIN)
            record(
                session=session,
                action="user_created",
                who=None,
                target=f"user {user.id}",
                detail=f"admin {name} (command line)",
            )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"admin {user.username} created: sign in at the app's address")
    return 0


if __name__ == "__main__":
    sys.exit(main())
