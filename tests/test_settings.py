"""Settings read from the environment the way the README documents them."""

from pathlib import Path

import pytest

from settings import Settings


@pytest.mark.parametrize("value", ["/srv/mri:/data", '["/srv/mri", "/data"]'])
def test_allowed_data_roots_accept_a_colon_list_or_json(monkeypatch, value):
    monkeypatch.setenv("ALLOWED_DATA_ROOTS", value)
    assert Settings().allowed_data_roots == [Path("/srv/mri"), Path("/data")]


def test_confidence_threshold_outside_zero_to_one_is_refused(monkeypatch):
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "1.5")
    with pytest.raises(ValueError, match="between 0 and 1"):
        Settings()
