import re

import pytest
from playwright.sync_api import expect

from db.audit import AuditFilters, audit_page
from db.schema import CLASSES, utcnow
from db.session import session_scope
from domain import class_label
from scripts.harness import RESULT_TIMEOUT_MS, App
from settings import SAMPLE_DIR

pytestmark = pytest.mark.e2e

A_CLASS = re.compile(f"^({'|'.join(class_label(name) for name in CLASSES)})$")  # in words: "No tumor"
PATIENT = "E2E-0001"


def test_a_diagnosed_scan_is_saved_and_reviewed_in_the_patients_history(app: App) -> None:
    started = utcnow()
    scan = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0]
    app.open("Diagnose")
    main = app.main()
    expect(main.get_by_test_id("stAlert").filter(has_text="Decision support only")).to_be_visible()
    main.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(scan)
    app.settle()

    # One answer, one probability chart and one heatmap per active model.
    metrics = main.get_by_test_id("stMetricValue")
    expect(metrics).to_have_count(2, timeout=RESULT_TIMEOUT_MS)
    app.settle()  # the heatmaps are computed after the answers are drawn
    for metric in metrics.all():
        expect(metric).to_have_text(A_CLASS)
    expect(main.locator("[data-testid=stPlotlyChart] .js-plotly-plot")).to_have_count(2)
    heatmaps = main.get_by_test_id("stImage").filter(has_text=" heatmap: ")
    expect(heatmaps).to_have_count(2)
    expect(heatmaps.first.locator("img")).to_be_visible()

    app.click(main.get_by_test_id("stRadio").get_by_text("New patient", exact=True))
    app.fill(main.get_by_role("textbox", name="New patient id"), PATIENT)
    app.click(main.get_by_role("button", name="Save 1 scan(s) to the record"))
    expect(
        main.get_by_text(f"Saved to patient {PATIENT}'s record: 1 new scan(s), 2 new prediction(s).")
    ).to_be_visible()
    app.screenshot("diagnose", show=main.get_by_test_id("stExpander").filter(has_text=scan.name))

    app.click(main.get_by_role("link", name=f"Open patient {PATIENT}'s history"))
    expect(main.get_by_role("heading", name=f"Patient {PATIENT}")).to_be_visible()
    expect(main.get_by_text(re.compile(r"^Scan #\d+ · "))).to_have_count(1)
    expect(main.get_by_text("Not read yet", exact=False)).to_be_visible()

    app.click(main.get_by_test_id("stExpander").get_by_text("Read this scan", exact=True))
    app.click(main.get_by_test_id("stRadio").get_by_text("Not assessable", exact=True))
    app.click(main.get_by_role("button", name="Save read"))
    expect(main.get_by_text(re.compile(r"^Read saved: scan #\d+ read as Not assessable\.$"))).to_be_visible()
    expect(main.get_by_text(f"Read: Not assessable by {app.username}", exact=False)).to_be_visible()
    expect(main.get_by_text("Not read yet", exact=False)).to_have_count(0)
    app.screenshot("history", show=main.get_by_role("heading", name=f"Patient {PATIENT}"))

    # One audit entry per action of the walk-through, in order, each naming the clinician and this tab's session.
    with session_scope() as session:
        entries = list(reversed(audit_page(session=session, filters=AuditFilters(since=started), per_page=100)))
    assert [(e.action, e.username) for e in entries] == [
        ("sign_in", app.username),
        ("prediction", app.username),
        ("upload", app.username),
        ("list_viewed", app.username),  # the History page's list of every patient's predictions, sent with it
        ("patient_viewed", app.username),
        ("review", app.username),
    ]
    assert [e.patient_mrn for e in entries] == [None, None, PATIENT, None, PATIENT, PATIENT]
    assert len({e.session_id for e in entries}) == 1 and entries[0].session_id


def test_an_image_that_is_not_a_brain_mri_slice_gets_no_tumor_class_unless_asked(app: App, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(noise)
    app.open("Diagnose")
    main = app.main()
    main.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(noise)
    app.settle()

    expect(main.get_by_test_id("stAlert").filter(has_text="Not a brain MRI slice")).to_be_visible(
        timeout=RESULT_TIMEOUT_MS
    )
    expect(main.get_by_test_id("stMetricValue")).to_have_count(0)
    expect(main.get_by_text("1 image(s) that are not brain MRI slices are not saved to the record.")).to_be_visible()
    expect(main.get_by_role("button", name="Save 0 scan(s) to the record")).to_be_disabled()

    # Asked for explicitly, the answer is shown, marked as not a finding, and still not savable.
    app.click(main.get_by_test_id("stCheckbox").get_by_text("Show the models' answer anyway"))
    expect(main.get_by_test_id("stMetricValue")).to_have_count(2, timeout=RESULT_TIMEOUT_MS)
    expect(
        main.get_by_test_id("stAlert").filter(has_text="Shown anyway, for an image that is not a brain MRI")
    ).to_be_visible()
    expect(main.get_by_role("button", name="Save 0 scan(s) to the record")).to_be_disabled()


def test_unsaved_results_come_back_after_the_page_is_reloaded(app: App) -> None:
    scans = [sorted((SAMPLE_DIR / name).glob("*.jpg"))[0] for name in ("meningioma", "notumor")]
    app.open("Diagnose")
    main = app.main()
    main.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(scans)
    app.settle()
    # Two files: a summary first, then each scan folded.
    expect(main.get_by_test_id("stDataFrame")).to_have_count(1, timeout=RESULT_TIMEOUT_MS)
    expect(main.get_by_test_id("stExpander")).to_have_count(2)

    app.page.reload()
    app.settle()
    # Until a reload keeps the browser signed in, the person signs in again; the results are kept for them either way.
    if app.main().get_by_role("button", name="Sign in").is_visible():
        app.sign_in()
    app.open("Diagnose")
    expect(main.get_by_text(re.compile(r"^2 result\(s\) from .* UTC were not saved to a record"))).to_be_visible()
    expect(main.get_by_test_id("stExpander")).to_have_count(2)
    for scan in scans:
        expect(main.get_by_test_id("stExpander").filter(has_text=scan.name)).to_have_count(1)
    app.click(main.get_by_role("button", name="Discard these results"))
    expect(main.get_by_test_id("stExpander")).to_have_count(0)
