"""Audit entries a page writes for what it shows: once per browser session and query, not on every redraw."""

import streamlit as st

from db.audit import describe
from services import audit_log
from services.auth import Actor

SHOWN_KEY = "audited_lists"  # {(what, filters, page)} this session already recorded


def list_shown(actor: Actor, what: str, *, filters: object, page: int, shown: int, total: int) -> None:
    """Record once that page `page` (from 1) of a list of records under `filters` was shown to `actor`."""
    key = (what, describe(filters), page)
    done = st.session_state.setdefault(SHOWN_KEY, set())
    if key in done:
        return
    audit_log.list_viewed(actor, what, filters=filters, page=page, shown=shown, total=total)
    done.add(key)
