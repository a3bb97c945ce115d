"""The sign-in throttle's rules: which counters an attempt counts on, how long they hold it back, in words.

Failures are counted per user name, per client address (an IPv6 client per /64; unknown addresses share one
bucket) and, for an admin's name, per address, so nobody elsewhere can hold an admin back. The counters live in
db/throttle.py; services/auth.py's sign_in locks them for its whole transaction.
"""

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from db import throttle, users
from db.schema import utcnow
from db.secrets import keyed_hash
from db.session import read_scope
from settings import get_settings

# An admin's wait after too many failures from one address starts here and doubles with each further failure.
DELAY_BASE_S = 2


def client_address(raw: str | None) -> str | None:
    """An address as the audit log and the throttle keep it: an IPv4 address arriving as IPv6 (::ffff:a.b.c.d)
    as itself; anything that is no IP address as None."""
    try:
        address = ipaddress.ip_address((raw or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def client_bucket(client: str | None) -> str:
    """The throttle's key for an address: the address, an IPv6 address's /64 (one machine holds a whole /64),
    and one shared bucket for every request whose address is unknown."""
    address = client_address(client)
    if address is None:
        return "unknown"
    if ":" in address:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


def throttle_keys(session: Session, name: str, client: str | None, admin: bool) -> tuple[str, str, str]:
    name_hash = keyed_hash(name, session=session)
    bucket = client_bucket(client)
    # An admin's name is counted per address (nobody elsewhere can hold an admin back); other names whole.
    name_key = "admin:" + keyed_hash(f"{name}\0{bucket}", session=session) if admin else "name:" + name_hash
    return name_hash, name_key, "client:" + bucket


def name_hold_s(counter: throttle.Counter) -> float:
    """How long after its last failure a name's counter holds sign-ins back (0: it does not)."""
    settings = get_settings()
    extra = counter.failures - settings.signin_max_failures
    if extra < 0:
        return 0
    if counter.key.startswith("admin:"):
        return min(DELAY_BASE_S * 2**extra, settings.signin_max_delay_s)
    return settings.signin_lockout_s


def refusal(counters: dict[str, throttle.Counter], name_key: str, client_key: str, now: datetime) -> str | None:
    settings = get_settings()
    by_client = counters[client_key]
    client_hold = settings.signin_lockout_s if by_client.failures >= settings.client_max_failures else 0
    if left := throttle.seconds_left(by_client.last_failure_at, client_hold, now):
        return f"Too many failed sign-ins from this address: wait {duration(left)} and try again."
    by_name = counters[name_key]
    if left := throttle.seconds_left(by_name.last_failure_at, name_hold_s(by_name), now):
        return f"Too many failed sign-ins: wait {duration(left)} and try again, or ask an admin to unlock the account."
    return None


def duration(seconds: float) -> str:
    if seconds <= 90:
        whole = max(1, math.ceil(seconds))
        return "1 second" if whole == 1 else f"{whole} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


@dataclass(frozen=True)
class Hold:
    """What holds a user's sign-ins back now, for the Users page."""

    failures: int
    until: datetime  # UTC
    per_address: bool  # an admin's delay, from some address; otherwise the whole name is locked


def sign_in_holds(user_rows: list[users.UserRow]) -> dict[int, Hold]:
    """The users whose name is locked or delayed now, by id."""
    now, holds = utcnow(), {}
    with read_scope() as session:
        for user in user_rows:
            name_hash = keyed_hash(user.username, session=session)
            for counter in throttle.failures_of_name(session=session, name_hash=name_hash):
                hold = name_hold_s(counter)
                if not hold or counter.last_failure_at is None:
                    continue
                until = counter.last_failure_at + timedelta(seconds=hold)
                if until > now and (user.id not in holds or until > holds[user.id].until):
                    holds[user.id] = Hold(counter.failures, until, counter.key.startswith("admin:"))
    return holds
