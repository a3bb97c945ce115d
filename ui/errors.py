"""Errors a person can cause (domain.UserError) become a message on the page, in one place for every page:

with errors.shown() as outcome:
    registry.activate(actor, version_id=version.id)
if outcome.failed:
    return
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from domain import UserError
from ui import notices
from ui.text import literal


@dataclass
class Outcome:
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@contextmanager
def shown(before: str = "", *, later: str | None = None) -> Iterator[Outcome]:
    """Run the block; a UserError it raises is shown as an error (after `before`, e.g. "Not saved: "), at once or,
    with `later` (a notice place, see ui.notices), on the next run. Anything else is a bug and propagates."""
    outcome = Outcome()
    try:
        yield outcome
    except UserError as exc:
        outcome.error = str(exc)
        message = before + literal(exc)
        if later is None:
            st.error(message)
        else:
            notices.later(message, kind="error", place=later)
