"""The Series page, as a clinician uses it, on a series really predicted by the shipped models."""

import numpy as np
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.jobs import create_job
from db.schema import AuditEntry
from db.session import session_scope
from scripts.make_series import series_files
from services.dicom_intake import receive
from services.model_files import register_default_models
from services.series import run_series
from settings import ROOT, SAMPLE_DIR
from tests.env import environment
from tests.users import signed_in

PAGE = str(ROOT / "views" / "10_Series.py")


@pytest.fixture(scope="module")
def series_id(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A 6-slice series (4 no tumor, 2 pituitary) received and predicted through the series job's own code."""
    tmp_path = tmp_path_factory.mktemp("series-page")
    images = [
        *sorted((SAMPLE_DIR / "notumor").glob("*.jpg"))[:4],
        *sorted((SAMPLE_DIR / "pituitary").glob("*.jpg"))[:2],
    ]
    with environment(DICOM_SPOOL_DIR=str(tmp_path / "spool")):
        with session_scope() as session:
            register_default_models(session=session)
        got = [receive(data, source="dimse", sender="MODALITY1") for data in series_files(images, patient_id="P-VIEW")]
        with session_scope() as session:
            job_id = create_job(session=session, kind="series", params={}).id
        run_series(job_id, {"series_id": got[0].series_id}, progress=lambda *_: None, check_cancel=lambda: None)
    return got[0].series_id


def pictures(at: AppTest) -> list[tuple[str, str]]:
    """(caption, media URL) of every picture on the page; the URL names the picture's content."""
    return [(img.caption, img.url) for element in at.get("image") for img in element.proto.imgs]


def opened(series_id: int) -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60), role="clinician")
    at.query_params["series"] = str(series_id)
    at.run()
    assert not at.exception, at.exception
    return at


def viewed() -> list[tuple[str | None, str | None]]:
    with session_scope() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "series_viewed")).all()
        return [(e.target, e.patient_mrn) for e in entries]


def test_the_series_opens_with_its_answer_and_its_view_is_audited_once(series_id: int) -> None:
    before = viewed()
    at = opened(series_id)
    assert any(m.label == "Series answer" and m.value == "Pituitary" for m in at.metric)
    assert any("Series rule" in c.value for c in at.caption)
    at.run()  # a redraw is not a new view
    assert viewed()[len(before) :] == [(f"series {series_id}", "P-VIEW")]


@pytest.mark.slow
def test_the_most_suspicious_slice_is_offered_first_and_jumps_there(series_id: int) -> None:
    at = opened(series_id)
    jump = at.selectbox(key=f"series_jump_{series_id}")
    first = jump.options[0]
    assert "Pituitary" in first
    jump.select_index(0).run()
    assert at.slider(key=f"series_slice_{series_id}").value in (5, 6)


@pytest.mark.slow
def test_window_level_works_on_the_original_values_and_zoom_shows_them(series_id: int) -> None:
    at = opened(series_id)
    wl = at.radio(key=f"series_wl_{series_id}")
    assert wl.options[:3] == ["Header window", "Full range", "Contrast (1st-99th percentile)"]
    shown = []
    for preset in ("Header window", "Full range"):
        wl.set_value(preset).run()
        assert not at.exception
        shown.append(pictures(at)[0])
    assert shown[0][0] == "C 2000 / W 4000" and shown[1][0] != shown[0][0]
    assert shown[0][1] != shown[1][1]  # a different window draws different pixels
    at.select_slider(key=f"series_zoom_{series_id}").set_value(3.0).run()
    assert not at.exception and pictures(at)[0][1] != shown[1][1]


@pytest.mark.slow
def test_the_heatmap_toggles_on_with_its_colour_scale(series_id: int) -> None:
    at = opened(series_id)
    at.toggle(key=f"series_heat_{series_id}").set_value(True).run()
    assert not at.exception
    captions = [caption for caption, _ in pictures(at)]
    assert any("heatmap" in c for c in captions) and "high to low" in captions


@pytest.mark.slow
def test_custom_window_values_are_used(series_id: int) -> None:
    at = opened(series_id)
    at.radio(key=f"series_wl_{series_id}").set_value("Custom").run()
    at.number_input(key=f"series_c_{series_id}").set_value(100.0).run()
    at.number_input(key=f"series_w_{series_id}").set_value(50.0).run()
    assert pictures(at)[0][0] == "C 100 / W 50"


def test_a_signed_out_visitor_sees_only_the_sign_in_form(series_id: int) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception and not at.metric and np.all([b.label != "Slice" for b in at.slider])


def test_history_shows_the_series_as_one_entry_with_its_slices_beneath(series_id: int) -> None:
    at = signed_in(AppTest.from_file(str(ROOT / "views" / "3_History.py"), default_timeout=60), role="clinician")
    at.query_params["patient"] = "P-VIEW"
    at.run()
    assert not at.exception, at.exception
    headings = [m.value for m in at.markdown if m.value.startswith(f"**Series #{series_id}**")]
    assert len(headings) == 1 and "6 slice(s)" in headings[0] and "Pituitary" in headings[0]
    [slices] = [e for e in at.expander if e.label == "Its 6 slice(s)"]
    assert sum(m.value.startswith("**Scan #") for m in slices.markdown) == 6
