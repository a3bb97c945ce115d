"""Keyed hashes of what the database keeps only as a digest: user names nobody has, browser session ids."""

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.schema import AppSecret
from settings import get_settings

HASH_KEY = "audit_hash_key"
# A stored hash starts with this mark, which no user name may hold (db/users.py USERNAME_CHARS).
MARK = "#"
_stored: dict[str, bytes] = {}  # the key migrating each database stored, by the database's URL


def _key(session: Session | None) -> bytes:
    settings = get_settings()
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    url = str(session.get_bind().url) if session is not None else settings.database_url
    if url not in _stored:
        query = select(AppSecret.value).where(AppSecret.name == HASH_KEY)
        if session is not None:
            value = session.scalar(query)
        else:
            from db.session import read_scope

            with read_scope() as own:
                value = own.scalar(query)
        if value is None:
            raise RuntimeError(f"the database has no {HASH_KEY}: run `make migrate`")
        _stored[url] = value.encode()
    return _stored[url]


def keyed_hash(text: str, *, session: Session | None = None) -> str:
    """HMAC-SHA256 of `text` under the app's key (of `session`'s database, else the app's), in hex: the same text
    always gives the same digest, and without the key nobody can test guesses against it (a password typed as a
    user name stays unknown)."""
    return hmac.new(_key(session), text.encode("utf-8"), hashlib.sha256).hexdigest()


def hidden(text: str, chars: int = 16, *, session: Session | None = None) -> str:
    """What the audit log stores instead of `text`: the mark and the start of its keyed hash."""
    return MARK + keyed_hash(text, session=session)[:chars]


def is_hidden(value: str | None) -> bool:
    return bool(value) and value.startswith(MARK)
