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


def test_every_setting_is_listed_in_env_example_and_in_the_readme_table():
    from settings import ROOT

    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"# {name.upper()}=" in env_example, f"{name.upper()} is missing from .env.example"
        assert f"| {name} | `{name.upper()}` |" in readme, f"{name} is missing from the README's settings table"


def test_dicom_ae_titles_are_checked_and_the_allow_list_splits_on_commas(monkeypatch):
    monkeypatch.setenv("DICOM_ALLOWED_AETS", "MODALITY1, PACS_MAIN")
    assert Settings().dicom_allowed_aets == ["MODALITY1", "PACS_MAIN"]
    monkeypatch.setenv("DICOM_AE_TITLE", "A_TITLE_FAR_TOO_LONG")
    with pytest.raises(ValueError, match="not an AE title"):
        Settings()


@pytest.mark.parametrize("value", ["PACS@10.0.0.5", "PACS@host:0", "@host:104", "PACS\\X@host:104"])
def test_a_dicom_destination_must_read_ae_at_host_colon_port(monkeypatch, value):
    monkeypatch.setenv("DICOM_DESTINATION", value)
    with pytest.raises(ValueError, match="DICOM_DESTINATION"):
        Settings()
