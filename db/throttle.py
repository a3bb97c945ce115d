"""The sign-in throttle's counters: failed sign-ins in a row per user name, per client address, and per admin's
name from one address. Names are kept only as keyed hashes (a password typed as a name stays unknown).

A sign-in locks the rows of its keys (always in the same order) for its whole transaction, password check
included, so parallel guesses at one name are checked one after the other and the limit holds on PostgreSQL as
it does on SQLite, where the write lock already serialises them.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.schema import SignInThrottle


@dataclass
class Counter:
    """One key's failures in a row and when the last was; change it, then `save` it in the same transaction."""

    key: str
    failures: int
    last_failure_at: datetime | None

    def fail(self, now: datetime, streak_s: float) -> None:
        """Count a failure; a failure more than `streak_s` after the last one starts a new streak."""
        fresh = self.last_failure_at is None or (now - self.last_failure_at).total_seconds() > streak_s
        self.failures = 1 if fresh else self.failures + 1
        self.last_failure_at = now

    def clear(self) -> None:
        self.failures, self.last_failure_at = 0, None


def lock(*, session: Session, keys: dict[str, str | None]) -> dict[str, Counter]:
    """The counters of `keys` (key -> the name's hash it belongs to, if any), each row created when missing and
    locked until the transaction ends."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    counters = {}
    # One order for every transaction: two sign-ins never wait on each other's rows in a cycle.
    for key in sorted(keys):
        session.execute(
            insert(SignInThrottle)
            .values(key=key, name_hash=keys[key], failures=0, last_failure_at=None)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = session.scalar(select(SignInThrottle).where(SignInThrottle.key == key).with_for_update())
        counters[key] = Counter(key, row.failures, row.last_failure_at)
    return counters


def save(*, session: Session, counters: dict[str, Counter]) -> None:
    for counter in counters.values():
        row = session.get(SignInThrottle, counter.key)
        row.failures, row.last_failure_at = counter.failures, counter.last_failure_at
    session.flush()


def failures_of_name(*, session: Session, name_hash: str) -> list[Counter]:
    """Every counter of one user name (its own and, for an admin, one per address), the latest failure first."""
    rows = session.scalars(
        select(SignInThrottle)
        .where(SignInThrottle.name_hash == name_hash, SignInThrottle.failures > 0)
        .order_by(SignInThrottle.last_failure_at.desc())
    )
    return [Counter(r.key, r.failures, r.last_failure_at) for r in rows]


def clear_name(*, session: Session, name_hash: str) -> int:
    """Forget every failure of a user name (an unlock, a password reset); returns how many counters held some."""
    result = session.execute(
        delete(SignInThrottle).where(SignInThrottle.name_hash == name_hash, SignInThrottle.failures > 0)
    )
    return result.rowcount


def remove_old(*, session: Session, before: datetime) -> int:
    """Drop counters with no failure since `before`: they no longer hold anything back."""
    result = session.execute(
        delete(SignInThrottle).where(
            or_(SignInThrottle.last_failure_at.is_(None), SignInThrottle.last_failure_at < before)
        )
    )
    return result.rowcount


def seconds_left(last: datetime | None, wait_s: float, now: datetime) -> float:
    """How long until `wait_s` after `last` has passed (0 when it has)."""
    if last is None or wait_s <= 0:
        return 0.0
    return max(0.0, (last + timedelta(seconds=wait_s) - now).total_seconds())
