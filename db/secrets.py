"""Keyed hashes of what the database keeps only as a digest: user names nobody has, browser session ids."""

import hashlib
import hmac
from functools import lru_cache

from sqlalchemy import select

from db.schema import AppSecret
from settings import get_settings

HASH_KEY = "audit_hash_key"
# A stored hash starts with this mark, which no user name may hold (db/users.py USERNAME_CHARS).
MARK = "#"


@lru_cache(maxsize=8)
def _stored_key(database_url: str) -> bytes:
    from db.session import read_scope

    with read_scope() as session:
        value = session.scalar(select(AppSecret.value).where(AppSecret.name == HASH_KEY))
    if value is None:
        raise RuntimeError(f"the database has no {HASH_KEY}: run `make migrate`")
    return value.encode()


def _key() -> bytes:
    settings = get_settings()
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return _stored_key(settings.database_url)


def keyed_hash(text: str) -> str:
    """HMAC-SHA256 of `text` under the app's key, in hex: the same text always gives the same digest, and without
    the key nobody can test guesses against it (a password typed as a user name stays unknown)."""
    return hmac.new(_key(), text.encode("utf-8"), hashlib.sha256).hexdigest()


def hidden(text: str, chars: int = 16) -> str:
    """What the audit log stores instead of `text`: the mark and the start of its keyed hash."""
    return MARK + keyed_hash(text)[:chars]


def is_hidden(value: str | None) -> bool:
    return bool(value) and value.startswith(MARK)
