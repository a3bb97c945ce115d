"""Settings read with some environment variables changed, for a test or a whole module."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from settings import get_settings


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Settings read with these environment variables, and read afresh once they are gone."""
    mp = pytest.MonkeyPatch()
    for name, value in values.items():
        mp.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield
    finally:
        mp.undo()
        get_settings.cache_clear()
