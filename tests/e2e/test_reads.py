"""In a real browser: a batch of a ward's scans (one DICOM with a hospital's patient id, the rest without one),
its CSV downloaded, its flagged anonymous scan read and given a patient in the review queue, a clinician
working through the queue with "Next case", and patient ids found whatever their case."""

import csv
import io
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from sqlalchemy import select

from db.runs import get_active_model
from db.scans import get_patient
from db.schema import CLASSES, AuditEntry, Read, Scan
from db.session import session_scope
from models.data.imaging import decode_image
from scripts.harness import RESULT_TIMEOUT_MS, App
from services.diagnosis import model_result, save_scan_with_predictions
from settings import SAMPLE_DIR, get_settings

pytestmark = pytest.mark.e2e

HOSPITAL_ID = "HOSP 123/456"


def ward_folder(dicom_bytes) -> Path:  # type: ignore[no-untyped-def]
    """A folder under the stack's own data root: a DICOM naming its patient, two JPEGs and a picture that is not
    a brain MRI slice, none of the three with a patient."""
    folder = get_settings().allowed_data_roots[-1] / f"ward-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    (folder / "series1.dcm").write_bytes(dicom_bytes(patient_mrn=HOSPITAL_ID))
    for picture in ("glioma", "meningioma"):
        path = sorted((SAMPLE_DIR / picture).glob("*.jpg"))[1]
        (folder / f"{picture}.jpg").write_bytes(path.read_bytes())
    noise = np.random.default_rng(7).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "photo.png")
    return folder


def test_a_batchs_csv_downloads_and_its_flagged_anonymous_scan_is_read_and_given_a_patient(
    app: App, dicom_bytes
) -> None:  # type: ignore[no-untyped-def]
    folder = ward_folder(dicom_bytes)
    app.open("Batch")
    main = app.main()
    app.fill(main.get_by_role("textbox", name="Folder path"), str(folder))
    expect(main.get_by_text("4 image(s) to predict")).to_be_visible()
    # The input holds DICOM, so the header is the default; the page says who would get no patient.
    expect(main.get_by_role("radio", name="From the DICOM header (PatientID)")).to_be_checked()
    expect(main.get_by_text("3 of 4 image(s) would be saved without a patient")).to_be_visible()
    app.click(main.get_by_role("button", name="Start the batch"))
    panel = main.get_by_text(re.compile(r"^Job \d+ · batch · "))
    expect(panel).to_have_text(re.compile("finished$"), timeout=RESULT_TIMEOUT_MS)
    app.settle()
    job_id = int(re.search(r"Job (\d+)", panel.inner_text()).group(1))

    # The CSV is made for the signed-in clinician when the button is pressed, with one row per file.
    with app.page.expect_download() as download:
        main.get_by_role("button", name="Download these 4 rows as CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    by_file = {row["file"]: row for row in rows}
    assert sorted(by_file) == ["glioma.jpg", "meningioma.jpg", "photo.png", "series1.dcm"]
    assert by_file["series1.dcm"]["patient_id"] == HOSPITAL_ID and by_file["series1.dcm"]["status"] == "done"
    assert by_file["photo.png"]["status"] == "skipped" and by_file["photo.png"]["why"].startswith(
        "not a brain MRI slice"
    )
    assert all(row["scan_id"] for row in rows) and {row["read_label"] for row in rows} == {""}
    with session_scope() as session:
        exported = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "export", AuditEntry.target == f"job {job_id} results CSV")
        ).all()
        refused = session.scalars(select(AuditEntry).where(AuditEntry.action == "refused")).all()
    assert [e.username for e in exported] == [app.username] and refused == []

    # The refused picture has no patient and is flagged: the job's link opens it first in the review queue.
    app.click(main.get_by_role("link", name=re.compile("^Read this job's 4 scan\\(s\\) awaiting a read")))
    expect(main.get_by_role("heading", name="Review queue")).to_be_visible()
    expect(main.get_by_text("Flagged: not a brain MRI slice, by the check.")).to_be_visible()
    expect(main.get_by_role("heading", name=re.compile(r"photo\.png$"))).to_be_visible()
    photo = int(by_file["photo.png"]["scan_id"])
    app.click(main.get_by_test_id("stRadio").get_by_text("New patient", exact=True))
    app.fill(main.get_by_role("textbox", name="New patient id"), "WARD-7")
    app.click(main.get_by_role("button", name="Assign to this patient"))
    expect(main.get_by_text(f"Scan #{photo} now belongs to patient WARD-7.")).to_be_visible()
    choose(app, "Not assessable")
    app.click(main.get_by_role("button", name="Save read and open the next case"))
    expect(main.get_by_text(f"Read saved: scan #{photo} read as Not assessable.")).to_be_visible()
    expect(main.get_by_role("heading", name=re.compile(r"photo\.png$"))).to_have_count(0)
    app.screenshot("review-queue", show=main.get_by_role("heading", name="Review queue"))
    with session_scope() as session:
        scan = session.get(Scan, photo)
        assert scan.patient.mrn == "WARD-7" and scan.refusal
        assert session.scalars(select(Read.label).where(Read.scan_id == photo)).all() == ["not_assessable"]

    # The DICOM went to the patient its header names, written as the hospital writes it, found whatever its case.
    app.open("History")
    app.fill(main.get_by_role("textbox", name="Search patient id"), "hosp 123/456")
    expect(main.get_by_role("heading", name=f"Patient {HOSPITAL_ID}")).to_be_visible()


def _scans_for(patient: str, count: int) -> list[int]:
    """Scans saved straight into the stack's database for `patient`, each with both active models' answers."""
    with session_scope() as session:
        models = [get_active_model(session=session, framework=fw) for fw in ("torch", "keras")]
        versions = [(m.framework, m.id) for m in models if m is not None]
    ids = []
    for index in range(count):
        path = sorted((SAMPLE_DIR / CLASSES[index % 4]).glob("*.jpg"))[2]
        with session_scope() as session:
            saved = save_scan_with_predictions(
                session=session,
                decoded=decode_image(path.read_bytes(), path.name, max_bytes=2**24, max_pixels=40_000_000),
                patient_mrn=patient,
                source="upload",
                results=[
                    model_result(framework=fw, model_version_id=vid, probabilities=[0.94, 0.02, 0.02, 0.02])
                    for fw, vid in versions
                ],
                threshold=0.7,
                original_name=f"{patient}-{index}.jpg",
            )
            ids.append(saved.scan.id)
    return ids


def choose(app: App, option: str) -> None:
    """Choose an option of the read form once the case's run is over (its form is drawn last)."""
    app.settle()
    group = app.main().get_by_test_id("stRadio")
    app.click(group.get_by_text(re.compile(f"^{re.escape(option)}")))
    expect(group.get_by_role("radio", name=re.compile(f"^{re.escape(option)}"))).to_be_checked()


def case_heading(app: App, scan_id: int):  # type: ignore[no-untyped-def]
    return app.main().get_by_role("heading", name=re.compile(f"^Scan #{scan_id}:"))


def test_a_clinician_works_through_the_review_queue_with_next_case(app: App) -> None:
    patient = f"Q-{uuid.uuid4().hex[:6]}"
    first, second, third = _scans_for(patient, 3)
    app.open("Review")
    main = app.main()
    app.fill(main.get_by_role("textbox", name="Patient id contains"), patient)
    expect(main.get_by_text("Case 1 of 3", exact=False)).to_be_visible()
    expect(case_heading(app, first)).to_be_visible()
    # Its image and both models' heatmaps.
    expect(main.get_by_test_id("stImage").filter(has_text=" heatmap: ")).to_have_count(2, timeout=RESULT_TIMEOUT_MS)

    choose(app, "Glioma")
    app.click(main.get_by_role("button", name="Save read and open the next case"))
    expect(main.get_by_text(f"Read saved: scan #{first} read as Glioma.")).to_be_visible()
    expect(case_heading(app, second)).to_be_visible()
    app.settle()
    # The form open now is the next case's own: nothing is chosen in it.
    expect(main.get_by_test_id("stRadio").get_by_role("radio", checked=True)).to_have_count(0)

    app.click(main.get_by_role("button", name="Next case", exact=True))
    expect(case_heading(app, third)).to_be_visible()
    choose(app, "Pituitary")
    app.click(main.get_by_role("button", name="Save read and open the next case"))
    expect(case_heading(app, second)).to_be_visible()
    choose(app, "Not assessable")
    app.click(main.get_by_role("button", name="Save read and open the next case"))
    expect(main.get_by_text("No scan awaits a read under these filters.")).to_be_visible()
    with session_scope() as session:
        saved = session.execute(
            select(Read.scan_id, Read.label, Read.read_by).where(Read.scan_id.in_([first, second, third]))
        ).all()
    assert sorted(saved) == sorted(
        [(first, "glioma", app.username), (third, "pituitary", app.username), (second, "not_assessable", app.username)]
    )


def test_an_id_typed_in_another_case_opens_the_patient_written_so(app: App) -> None:
    _scans_for("MRN-4711", 1)
    app.open("History")
    main = app.main()
    app.fill(main.get_by_role("textbox", name="Search patient id"), "mrn-4711")
    expect(main.get_by_role("heading", name="Patient MRN-4711")).to_be_visible()
    with session_scope() as session:
        assert get_patient(session=session, mrn="mrn-4711").mrn == "MRN-4711"
