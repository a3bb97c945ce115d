import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from db.deletion import delete_patient, delete_scan
from db.history import PredictionFilters, all_predictions, list_patients, list_predictions, patient_timeline
from db.reads import ReadError, add_read, read_training_items
from db.runs import register_model_version
from db.schema import CLASSES, BatchItem, Job, Patient, Prediction, Read, Scan, utcnow
from db.session import session_scope
from models.data.imaging import decode_image
from services.diagnosis import model_result, save_scan_with_predictions
from services.reports import Heatmap, patient_report_html, predictions_csv
from settings import SAMPLE_DIR

LIMITS = {"max_bytes": 5 * 2**20, "max_pixels": 40_000_000}


def sample(label: str, index: int = 0) -> Path:
    return sorted((SAMPLE_DIR / label).glob("*.jpg"))[index]


def probabilities(label: str, confidence: float) -> list[float]:
    rest = (1.0 - confidence) / (len(CLASSES) - 1)
    return [confidence if name == label else rest for name in CLASSES]


@dataclass
class Seeded:
    torch_id: int
    keras_id: int
    patients: dict[str, int]  # mrn -> id
    scans: dict[str, int]  # "<mrn>/<image>" -> scan id
    files: dict[str, Path]  # image -> stored file


# (patient, image, source, day in January 2024, torch (label, confidence), keras (label, confidence))
SEED = [
    ("P-001", "glioma", "upload", 10, ("glioma", 0.95), ("glioma", 0.90)),
    ("P-001", "meningioma", "batch", 20, ("meningioma", 0.55), ("meningioma", 0.80)),
    ("P-002", "glioma", "upload", 12, ("glioma", 0.92), ("pituitary", 0.75)),
    ("P-002", "notumor", "batch", 25, ("notumor", 0.99), ("notumor", 0.97)),
    ("Q-100", "pituitary", "upload", 5, ("pituitary", 0.88), ("pituitary", 0.91)),
]


@pytest.fixture
def seeded(db_url: str) -> Seeded:
    return seed()


@pytest.fixture
def seeded_any(any_db_url: str) -> Seeded:
    """The same history on SQLite and on PostgreSQL."""
    return seed()


def seed() -> Seeded:
    """Three patients, five scans (P-001 and P-002 share the glioma image), two model versions."""
    with session_scope() as session:
        torch_id = register_model_version(
            session=session, framework="torch", name="cnn-v1", artifact_path="/nowhere/cnn.pth", sha256="a" * 64
        ).id
        keras_id = register_model_version(
            session=session, framework="keras", name="mobilenet-v1", artifact_path="/nowhere/m.keras", sha256="b" * 64
        ).id
    seeded = Seeded(torch_id, keras_id, {}, {}, {})
    for mrn, image, source, day, (t_label, t_conf), (k_label, k_conf) in SEED:
        path = sample(image)
        decoded = decode_image(path.read_bytes(), path.name, **LIMITS)
        with session_scope() as session:
            saved = save_scan_with_predictions(
                session=session,
                decoded=decoded,
                patient_mrn=mrn,
                source=source,
                results=[
                    model_result(framework=fw, model_version_id=version, probabilities=probabilities(label, confidence))
                    for fw, version, label, confidence in (
                        ("torch", torch_id, t_label, t_conf),
                        ("keras", keras_id, k_label, k_conf),
                    )
                ],
                threshold=0.7,
                original_name=path.name,
            )
            when = datetime(2024, 1, day, 9, 30)
            saved.scan.created_at = when
            for prediction in saved.predictions:
                prediction.created_at = when
            seeded.patients[mrn] = saved.scan.patient_pk
            seeded.scans[f"{mrn}/{image}"] = saved.scan.id
            seeded.files[image] = Path(saved.scan.file_path)
    return seeded


def prediction_id(seeded: Seeded, key: str, framework: str) -> int:
    with session_scope() as session:
        model_id = seeded.torch_id if framework == "torch" else seeded.keras_id
        query = select(Prediction.id).where(Prediction.scan_id == seeded.scans[key])
        return session.scalar(query.where(Prediction.model_version_id == model_id))


def read(scan_id: int, label: str, *, read_by: str = "Dr Grey", note: str | None = None) -> None:
    """A read of a scan, in a transaction of its own."""
    with session_scope() as session:
        add_read(session=session, scan_id=scan_id, label=label, note=note, read_by=read_by, user_id=None)


def keys(rows) -> set[tuple[str, str]]:
    """(patient/image, framework) of prediction rows."""
    return {(f"{r.patient_mrn}/{r.original_name}", r.framework) for r in rows}


def expected(predicate) -> set[tuple[str, str]]:
    found = set()
    for mrn, image, source, day, torch_result, keras_result in SEED:
        for framework, (label, _confidence) in (("torch", torch_result), ("keras", keras_result)):
            flagged = torch_result[0] != keras_result[0] or min(torch_result[1], keras_result[1]) < 0.7
            row = dict(mrn=mrn, source=source, day=day, framework=framework, label=label, flagged=flagged)
            if predicate(row):
                found.add((f"{mrn}/{sample(image).name}", framework))
    return found


def test_patient_search_matches_any_part_of_the_id(seeded):
    with session_scope() as session:
        page = list_patients(session=session, search="p-00")
        only = list_patients(session=session, search="100")
    assert [p.mrn for p in page.rows] == ["P-002", "P-001"] and page.total == 2
    assert [p.mrn for p in only.rows] == ["Q-100"]


def test_patient_list_gives_scans_last_scan_result_and_scans_awaiting_a_read(seeded_any):
    with session_scope() as session:
        rows = {p.mrn: p for p in list_patients(session=session).rows}
    p1, p2 = rows["P-001"], rows["P-002"]
    assert (p1.n_scans, p1.last_scan_at) == (2, datetime(2024, 1, 20, 9, 30))
    assert (p1.last_result, p1.last_result_read, p1.awaiting_read) == ("meningioma", False, 2)
    assert (p2.last_result, p2.awaiting_read) == ("notumor", 2)


def test_patient_list_shows_the_read_of_the_latest_scan_not_the_models_answer(seeded_any):
    read(seeded_any.scans["P-001/meningioma"], "glioma")
    read(seeded_any.scans["P-002/notumor"], "not_assessable")
    with session_scope() as session:
        rows = {p.mrn: p for p in list_patients(session=session, search="P-00").rows}
    assert (rows["P-001"].last_result, rows["P-001"].last_result_read, rows["P-001"].awaiting_read) == (
        "Glioma",
        True,
        1,
    )
    assert (rows["P-002"].last_result, rows["P-002"].last_result_read) == ("Not assessable", True)


def test_patient_list_is_paginated_with_a_total(seeded):
    with session_scope() as session:
        first = list_patients(session=session, limit=2, offset=0)
        second = list_patients(session=session, limit=2, offset=2)
    assert first.total == second.total == 3
    assert [p.mrn for p in first.rows + second.rows] == ["P-002", "P-001", "Q-100"]


@pytest.mark.parametrize(
    ("filters", "predicate"),
    [
        (dict(labels=("glioma",)), lambda r: r["label"] == "glioma"),
        (dict(labels=("notumor", "pituitary")), lambda r: r["label"] in ("notumor", "pituitary")),
        (dict(needs_review=True), lambda r: r["flagged"]),
        (dict(needs_review=False), lambda r: not r["flagged"]),
        (dict(source="batch"), lambda r: r["source"] == "batch"),
        (dict(date_from=date(2024, 1, 10), date_to=date(2024, 1, 20)), lambda r: 10 <= r["day"] <= 20),
        (dict(patient="p-002"), lambda r: r["mrn"] == "P-002"),
        (
            dict(labels=("glioma",), source="upload", needs_review=False),
            lambda r: r["label"] == "glioma" and r["mrn"] == "P-001",
        ),
    ],
)
def test_prediction_filter_returns_the_matching_rows(seeded_any, filters, predicate):
    with session_scope() as session:
        rows = all_predictions(session=session, filters=PredictionFilters(**filters))
    assert keys(rows) == expected(predicate)


def test_prediction_filter_by_model_version_and_patient_id(seeded):
    filters = PredictionFilters(model_version_ids=(seeded.keras_id,), patient_pk=seeded.patients["Q-100"])
    with session_scope() as session:
        rows = all_predictions(session=session, filters=filters)
    assert [(r.patient_mrn, r.model_name) for r in rows] == [("Q-100", "mobilenet-v1")]


def test_prediction_filter_on_whether_the_scan_was_read(seeded_any):
    read(seeded_any.scans["Q-100/pituitary"], "meningioma")
    with session_scope() as session:
        done = list_predictions(session=session, filters=PredictionFilters(read=True))
        waiting = list_predictions(session=session, filters=PredictionFilters(read=False))
    # Both models' answers stay beside the read, each showing it.
    assert {r.prediction_id for r in done.rows} == {
        prediction_id(seeded_any, "Q-100/pituitary", fw) for fw in ("torch", "keras")
    }
    assert {(r.label, r.read_label, r.read_by) for r in done.rows} == {("pituitary", "meningioma", "Dr Grey")}
    assert waiting.total == 2 * len(SEED) - 2 and {r.read_label for r in waiting.rows} == {None}


def test_predictions_are_paginated_newest_first(seeded):
    with session_scope() as session:
        pages = [list_predictions(session=session, filters=PredictionFilters(), limit=4, offset=o) for o in (0, 4, 8)]
    rows = [r for page in pages for r in page.rows]
    assert [page.total for page in pages] == [10, 10, 10] and len({r.prediction_id for r in rows}) == 10
    assert [r.created_at for r in rows] == sorted((r.created_at for r in rows), reverse=True)


def test_filters_refuse_an_inverted_date_range():
    with pytest.raises(ValueError, match="start date is after the end date"):
        PredictionFilters(date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))


def test_a_later_read_supersedes_an_earlier_one_and_both_stay(seeded_any):
    scan_id = seeded_any.scans["P-002/glioma"]
    before = utcnow()
    read(scan_id, "pituitary", read_by=" Dr Grey ", note="enhancing rim")
    read(scan_id, "glioma", read_by="Dr Yang")
    with session_scope() as session:
        timeline = patient_timeline(session=session, patient_pk=seeded_any.patients["P-002"])
        [row] = [r for r in all_predictions(session=session, filters=PredictionFilters()) if r.scan_id == scan_id][:1]
    scan = next(s for s in timeline.scans if s.scan_id == scan_id)
    assert [(r.label, r.read_by, r.note) for r in scan.reads] == [
        ("pituitary", "Dr Grey", "enhancing rim"),
        ("glioma", "Dr Yang", None),
    ]
    assert scan.current_read.label == "glioma" and before <= scan.reads[0].read_at <= scan.reads[1].read_at
    assert (row.read_label, row.read_by) == ("glioma", "Dr Yang")
    # The models' answers are evidence and stay as they were.
    assert sorted(p.label for p in scan.predictions) == ["glioma", "pituitary"]


def test_a_read_is_never_changed_in_the_database(seeded_any):
    read(seeded_any.scans["P-002/glioma"], "glioma")
    with pytest.raises(Exception, match="never changed"), session_scope() as session:
        session.scalars(select(Read)).one().label = "meningioma"
    with session_scope() as session:
        assert session.scalars(select(Read.label)).all() == ["glioma"]


@pytest.mark.parametrize(
    ("label", "reader", "note", "message"),
    [
        (None, "Dr Grey", None, "Choose the final class of the scan: one of Glioma, .* Not assessable"),
        ("astrocytoma", "Dr Grey", None, "Choose the final class"),
        ("glioma", "  ", None, "signed with a name"),
        ("glioma", "Dr Grey", "x" * 2001, "2,001 characters long"),
    ],
)
def test_a_read_refuses_bad_input_and_saves_nothing(seeded, label, reader, note, message):
    with session_scope() as session, pytest.raises(ReadError, match=message):
        add_read(
            session=session,
            scan_id=seeded.scans["Q-100/pituitary"],
            label=label,
            note=note,
            read_by=reader,
            user_id=None,
        )
    with session_scope() as session, pytest.raises(ReadError, match="no longer exists"):
        add_read(session=session, scan_id=999_999, label="glioma", note=None, read_by="Dr Grey", user_id=None)
    with session_scope() as session:
        assert session.scalar(select(func.count(Read.id))) == 0


def test_read_scans_become_training_items_with_their_current_read(seeded):
    read(seeded.scans["P-001/meningioma"], "meningioma")
    read(seeded.scans["Q-100/pituitary"], "glioma")
    read(seeded.scans["Q-100/pituitary"], "meningioma")  # the later read decides
    read(seeded.scans["P-002/notumor"], "not_assessable")  # no class: not a training item
    with session_scope() as session:
        items = read_training_items(session=session)
    assert sorted(items) == sorted(
        [(str(seeded.files["meningioma"]), "meningioma"), (str(seeded.files["pituitary"]), "meningioma")]
    )


def test_one_image_of_two_patients_is_one_training_item_labelled_by_the_latest_read(seeded):
    read(seeded.scans["P-002/glioma"], "glioma")
    read(seeded.scans["P-001/glioma"], "pituitary")
    with session_scope() as session:
        assert read_training_items(session=session) == [(str(seeded.files["glioma"]), "pituitary")]


def test_timeline_lists_scans_oldest_first_with_every_models_prediction(seeded):
    with session_scope() as session:
        timeline = patient_timeline(session=session, patient_pk=seeded.patients["P-002"])
    assert [s.original_name for s in timeline.scans] == [sample("glioma").name, sample("notumor").name]
    assert [[p.model_name for p in s.predictions] for s in timeline.scans] == [["mobilenet-v1", "cnn-v1"]] * 2
    assert [s.file_shared for s in timeline.scans] == [True, False]


def test_csv_holds_exactly_the_filtered_rows(seeded):
    filters = PredictionFilters(needs_review=True, source="upload")
    with session_scope() as session:
        rows = all_predictions(session=session, filters=filters)
    table = list(csv.DictReader(io.StringIO(predictions_csv(rows=rows).decode("utf-8"))))
    assert {int(r["prediction_id"]) for r in table} == {r.prediction_id for r in rows}
    assert {(f"{r['patient_id']}/{r['original_name']}", r["framework"]) for r in table} == expected(
        lambda r: r["flagged"] and r["source"] == "upload"
    )
    assert len(table) == len(rows)


def test_csv_shows_the_read_beside_each_models_answer_and_neutralises_formulas(seeded):
    read(seeded.scans["Q-100/pituitary"], "meningioma", read_by="=HYPERLINK(1)", note="@cmd")
    with session_scope() as session:
        rows = all_predictions(session=session, filters=PredictionFilters(read=True))
    table = list(csv.DictReader(io.StringIO(predictions_csv(rows=rows).decode("utf-8"))))
    assert [(r["predicted_label"], r["read_label"]) for r in table] == [("pituitary", "meningioma")] * 2
    assert {(r["read_by"], r["read_note"]) for r in table} == {("'=HYPERLINK(1)", "'@cmd")}
    assert all(r["read_at_utc"] for r in table) and "final_label" not in table[0]


def test_report_contains_each_scans_read_the_models_answers_and_heatmap(seeded):
    read(seeded.scans["P-001/meningioma"], "pituitary", read_by="Dr Yang")
    read(seeded.scans["P-001/meningioma"], "glioma", note="see MRI 2")
    with session_scope() as session:
        timeline = patient_timeline(session=session, patient_pk=seeded.patients["P-001"])
    overlay = np.zeros((8, 8, 3), dtype=np.uint8)
    html = patient_report_html(timeline=timeline, heatmap=lambda scan: Heatmap(model_name="cnn-v1", overlay=overlay))
    assert "P-001" in html and "meningioma" in html and "glioma" in html
    assert "cnn-v1" in html and "mobilenet-v1" in html
    assert "<strong>Read: Glioma</strong> by Dr Grey" in html and "see MRI 2" in html
    assert "Superseded read: Pituitary by Dr Yang" in html
    assert "<strong>Not read yet</strong>" in html  # the other scan
    # Two scans, each with its image and its heatmap, embedded.
    assert html.count("data:image/png;base64,") == 4
    assert "Decision support only" in html


def test_report_says_when_a_heatmap_or_image_is_missing(seeded):
    with session_scope() as session:
        timeline = patient_timeline(session=session, patient_pk=seeded.patients["Q-100"])
    seeded.files["pituitary"].unlink()
    html = patient_report_html(
        timeline=timeline, heatmap=lambda scan: Heatmap(model_name="cnn-v1", error="no model file")
    )
    assert "Image file missing" in html and "Heatmap unavailable: no model file" in html


def test_deleting_a_patient_removes_its_rows_and_unshared_files_only(seeded_any):
    with session_scope() as session:
        job = Job(kind="batch", status="succeeded", params={})
        session.add(job)
        session.flush()
        for rel_path, mrn, scan_key in [
            ("P-001/a.jpg", "P-001", "P-001/glioma"),  # the patient's own scan
            ("P-001/bad.jpg", "P-001", None),  # an unreadable file filed under the patient
            ("P-002/b.jpg", "P-002", "P-002/glioma"),
        ]:
            session.add(
                BatchItem(
                    job_id=job.id,
                    rel_path=rel_path,
                    status="done" if scan_key else "error",
                    patient_mrn=mrn,
                    scan_id=seeded_any.scans[scan_key] if scan_key else None,
                )
            )
    read(seeded_any.scans["P-001/glioma"], "glioma")
    with session_scope() as session:
        removal = delete_patient(session=session, patient_pk=seeded_any.patients["P-001"])
    assert (removal.scans, removal.predictions, removal.reads) == (2, 4, 1)
    assert not seeded_any.files["meningioma"].exists()
    assert seeded_any.files["glioma"].exists()  # P-002 has a scan of the same image
    with session_scope() as session:
        assert session.get(Patient, seeded_any.patients["P-001"]) is None
        assert session.scalar(select(func.count(Scan.id))) == 3
        assert session.scalar(select(func.count(Prediction.id))) == 6
        assert patient_timeline(session=session, patient_pk=seeded_any.patients["P-002"]).scans[0].file_shared is False
        # Nothing of the patient is left in batch results either; other patients' rows stay.
        assert session.scalars(select(BatchItem.rel_path)).all() == ["P-002/b.jpg"]
        # A row without a patient survives a second delete of the same patient (a double click).
        session.add(BatchItem(job_id=job.id, rel_path="no-patient.jpg", status="done", patient_mrn=None))
    with session_scope() as session:
        again = delete_patient(session=session, patient_pk=seeded_any.patients["P-001"])
    assert (again.scans, again.predictions, again.files) == (0, 0, ())
    with session_scope() as session:
        assert sorted(session.scalars(select(BatchItem.rel_path))) == ["P-002/b.jpg", "no-patient.jpg"]


def test_deleting_the_last_scan_of_an_image_removes_its_file(seeded):
    with session_scope() as session:
        delete_scan(session=session, scan_id=seeded.scans["P-001/glioma"])
    assert seeded.files["glioma"].exists()
    with session_scope() as session:
        delete_scan(session=session, scan_id=seeded.scans["P-002/glioma"])
    assert not seeded.files["glioma"].exists()


def test_a_deletion_rolled_back_keeps_the_file(seeded):
    with pytest.raises(RuntimeError), session_scope() as session:
        delete_scan(session=session, scan_id=seeded.scans["Q-100/pituitary"])
        raise RuntimeError("something failed later in the same transaction")
    assert seeded.files["pituitary"].exists()
    with session_scope() as session:
        assert session.get(Scan, seeded.scans["Q-100/pituitary"]) is not None


def test_deleting_a_scan_removes_the_batch_result_that_holds_its_prediction(seeded):
    with session_scope() as session:
        job = Job(kind="batch", status="succeeded", params={})
        session.add(job)
        session.flush()
        for rel_path, key in [("x.jpg", "Q-100/pituitary"), ("y.jpg", "P-002/glioma")]:
            session.add(BatchItem(job_id=job.id, rel_path=rel_path, status="done", scan_id=seeded.scans[key]))
    with session_scope() as session:
        delete_scan(session=session, scan_id=seeded.scans["Q-100/pituitary"])
    with session_scope() as session:
        assert session.scalars(select(BatchItem.rel_path)).all() == ["y.jpg"]
