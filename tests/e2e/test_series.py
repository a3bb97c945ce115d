import re
import time

import pytest
from playwright.sync_api import expect

from db.series import get_series
from db.session import session_scope
from scripts.harness import App
from scripts.make_series import series_files
from services.dicom_intake import receive
from settings import SAMPLE_DIR
from worker.submit import queue_series

pytestmark = pytest.mark.e2e

ANSWER_TIMEOUT_S = 300


def test_a_series_from_the_scanner_is_read_slice_by_slice_with_its_heatmap(app: App) -> None:
    # A 14-slice series as the listener receives it (through its intake), queued once complete.
    images = [
        *sorted((SAMPLE_DIR / "notumor").glob("*.jpg"))[:10],
        *sorted((SAMPLE_DIR / "pituitary").glob("*.jpg"))[:4],
    ]
    received = [
        receive(data, source="dimse", sender="MODALITY1") for data in series_files(images, patient_id="E2E-SERIES")
    ]
    series_id = received[0].series_id
    queue_series(series_id, actor=None, origin="the DICOM listener (calling AE MODALITY1)")
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        with session_scope() as session:
            series = get_series(session=session, series_id=series_id)
            status = series.status if series else None
        if status in ("answered", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == "answered"

    app.load(f"Series?series={series_id}")
    app.sign_in()
    main = app.main()
    expect(main.get_by_role("heading", name=re.compile(rf"AX T1 POST · #{series_id}"))).to_be_visible()
    expect(main.get_by_test_id("stMetricValue").first).to_have_text("Pituitary")
    expect(main.get_by_text("C 2000 / W 4000")).to_be_visible()

    # The most suspicious slice, then its heatmap over the slice with the colour scale beside it.
    app.click(main.get_by_test_id("stRadio").get_by_text("Contrast (1st-99th percentile)", exact=True))
    app.click(main.get_by_test_id("stCheckbox").filter(has_text="Heatmap").locator("label"))
    expect(main.get_by_test_id("stImage").filter(has_text="heatmap")).to_be_visible()
    expect(main.get_by_test_id("stImage").filter(has_text="high to low")).to_be_visible()
    app.screenshot("series", show=main.get_by_role("heading", name=re.compile(rf"#{series_id}")))
