"""Reads under the signed-in user, the review queue's order, filters and counts, patients given to scans without
one, merges of twins, deletes of patients, and patient ids matched as hospitals write them."""

from dataclasses import dataclass
from datetime import date

import pytest
from sqlalchemy import func, insert, select

from db.history import scan_entry
from db.jobs import create_job
from db.runs import register_model_version
from db.scans import get_or_create_patient, get_patient, validate_mrn
from db.schema import CLASSES, AuditEntry, BatchItem, Patient, Prediction, Read, Scan, utcnow
from db.session import session_scope
from db.worklist import QueueFilters
from domain import NotAllowed, UserError
from models.data.imaging import decode_image
from services import reads, records
from services.diagnosis import model_result, save_scan_with_predictions
from settings import SAMPLE_DIR
from tests.users import make_actor

LIMITS = {"max_bytes": 5 * 2**20, "max_pixels": 40_000_000}


def image(label: str, index: int = 0):  # type: ignore[no-untyped-def]
    path = sorted((SAMPLE_DIR / label).glob("*.jpg"))[index]
    return decode_image(path.read_bytes(), path.name, **LIMITS)


def answer(label: str, confidence: float) -> list[float]:
    rest = (1 - confidence) / 3
    return [confidence if c == label else rest for c in CLASSES]


@dataclass
class Models:
    torch: int
    keras: int


@pytest.fixture
def models(any_db_url: str) -> Models:
    with session_scope() as session:
        return Models(
            *(
                register_model_version(
                    session=session, framework=fw, name=f"{fw}-v1", artifact_path=f"/nowhere/{fw}", sha256=fw[0] * 64
                ).id
                for fw in ("torch", "keras")
            )
        )


def save(
    models: Models,
    mrn: str | None,
    picture: str,
    torch: tuple[str, float],
    keras: tuple[str, float],
    *,
    index: int = 0,
    job_id: int | None = None,
) -> int:
    """A scan of a sample image with both models' answers, flagged by the app's own rule; its id."""
    with session_scope() as session:
        saved = save_scan_with_predictions(
            session=session,
            decoded=image(picture, index),
            patient_mrn=mrn,
            source="batch" if job_id else "upload",
            results=[
                model_result(framework="torch", model_version_id=models.torch, probabilities=answer(*torch)),
                model_result(framework="keras", model_version_id=models.keras, probabilities=answer(*keras)),
            ],
            threshold=0.7,
            original_name=f"{picture}-{index}.jpg",
            job_id=job_id,
        )
        return saved.scan.id


def refused(mrn: str | None, picture: str = "notumor", *, job_id: int | None = None) -> int:
    with session_scope() as session:
        saved = save_scan_with_predictions(
            session=session,
            decoded=image(picture, 3),
            patient_mrn=mrn,
            source="batch",
            results=[],
            threshold=0.7,
            original_name="odd.png",
            job_id=job_id,
            refusal="not a brain MRI slice: it scores 3,100, above the threshold of 1,405",
        )
        return saved.scan.id


def audit(action: str) -> list[AuditEntry]:
    with session_scope() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


# Patient ids


@pytest.mark.parametrize("typed", ["HOSP 123/456", "Müller-01", "MRN-4711", "山田^太郎", "a" * 64, "O'Brien (2)"])
def test_a_patient_id_is_what_dicom_allows_in_patient_id(typed: str) -> None:
    assert validate_mrn(f"  {typed} ") == typed


def test_a_patient_id_is_kept_in_nfc() -> None:
    decomposed = "Mu\u0308ller"  # u + combining diaeresis, as some systems send it
    assert validate_mrn(decomposed) == "Müller" and len(validate_mrn(decomposed)) == 6


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("a" * 65, "is 65 characters long"),
        ("HOSP\\123", "holds a backslash"),
        ("P-1\n2", "holds a control character U+000A"),
        ("P\u00a01", "holds the character U+00A0 (no-break space)"),
    ],
)
def test_every_refusal_of_a_patient_id_states_the_real_rule(typed: str, why: str) -> None:
    with pytest.raises(ValueError, match="1 to 64 characters, as DICOM's PatientID allows") as refused:
        validate_mrn(typed)
    assert why in str(refused.value) and "no backslash and no control characters" in str(refused.value)


def test_an_id_matches_whatever_its_case_and_surrounding_spaces(any_db_url: str) -> None:
    with session_scope() as session:
        first = get_or_create_patient(session=session, mrn="MRN-4711")
        assert get_or_create_patient(session=session, mrn=" mrn-4711 ").id == first.id
        assert get_or_create_patient(session=session, mrn="müller-01").mrn == "müller-01"
        assert get_or_create_patient(session=session, mrn="MÜLLER-01").mrn == "müller-01"
        assert get_patient(session=session, mrn="Mu\u0308ller-01") is not None  # the NFD spelling of the same id
        assert get_patient(session=session, mrn="MRN-47110") is None
    with session_scope() as session:
        assert session.scalars(select(Patient.mrn).order_by(Patient.id)).all() == ["MRN-4711", "müller-01"]


def test_the_database_refuses_a_twin_a_concurrent_writer_would_make(any_db_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    with session_scope() as session:
        session.add(Patient(mrn="MRN-4711"))
    with pytest.raises(IntegrityError), session_scope() as session:
        session.add(Patient(mrn="mrn-4711"))  # what a second writer racing the first would insert


# Reads


def test_a_read_is_saved_under_the_signed_in_user_and_audited_with_the_models_answers(models: Models) -> None:
    scan = save(models, "P-1", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    reader = make_actor("clinician", "dr-grey")
    row = reads.read_scan(reader, scan_id=scan, label="glioma", note="  clear rim ")
    assert (row.label, row.read_by, row.note) == ("glioma", "dr-grey", "clear rim")
    [entry] = audit("review")
    assert (entry.username, entry.target, entry.patient_mrn) == ("dr-grey", f"scan {scan}", "P-1")
    assert entry.detail.startswith("read as Glioma, confirming the models' answer; models: ")
    with session_scope() as session:
        assert session.scalar(select(Read.user_id)) == reader.user_id


def test_nobody_signed_in_reads_nothing(models: Models) -> None:
    scan = save(models, "P-1", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    with pytest.raises(NotAllowed, match="Sign in to read scans"):
        reads.read_scan(None, scan_id=scan, label="glioma", note=None)
    with session_scope() as session:
        assert session.scalar(select(func.count(Read.id))) == 0


def test_deleting_a_scan_deletes_its_reads_and_says_how_many(models: Models) -> None:
    scan = save(models, "P-1", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    reads.read_scan(make_actor("clinician"), scan_id=scan, label="glioma", note=None)
    removal = records.remove_scan(make_actor("admin"), scan_id=scan)
    assert (removal.scans, removal.predictions, removal.reads) == (1, 2, 1)
    assert audit("scan_deleted")[0].detail == "1 scan(s), 2 prediction(s), 1 read(s)"


# The review queue


@pytest.fixture
def worklist(models: Models) -> dict[str, int]:
    """Scans in every state; the job's are anonymous."""
    reader = make_actor("clinician", "dr-grey")
    with session_scope() as session:
        job = create_job(session=session, kind="batch", params={}, submitted_by=reader.user_id).id
    scans = {
        "sure": save(models, "P-1", "glioma", ("glioma", 0.95), ("glioma", 0.91)),
        "unsure": save(models, "P-2", "meningioma", ("meningioma", 0.55), ("meningioma", 0.90)),
        "disagree": save(models, None, "pituitary", ("pituitary", 0.9), ("glioma", 0.9), job_id=job),
        "refused": refused(None, job_id=job),
        "read": save(models, "P-3", "notumor", ("notumor", 0.99), ("notumor", 0.98)),
        "sure-later": save(models, "P-4", "glioma", ("glioma", 0.95), ("glioma", 0.95), index=1),
    }
    reads.read_scan(reader, scan_id=scans["read"], label="notumor", note=None)
    return {**scans, "job": job}


def test_the_queue_holds_every_scan_awaiting_a_read_flagged_first(worklist: dict[str, int]) -> None:
    order = [(e.scan_id, e.reason) for e in reads.queue(filters=QueueFilters())]
    assert order == [
        (worklist["refused"], "refused"),
        (worklist["disagree"], "disagree"),
        (worklist["unsure"], "low_confidence"),
        (worklist["sure"], "none"),
        (worklist["sure-later"], "none"),
    ]


def test_the_queue_counts_each_state(worklist: dict[str, int]) -> None:
    counts = reads.counts(filters=QueueFilters())
    assert (counts.awaiting, counts.flagged, counts.without_patient, counts.read) == (5, 3, 2, 1)
    assert counts.by_reason == {
        "refused": 1,
        "disagree": 1,
        "low_confidence": 1,
        "conflicting_reads": 0,
        "none": 2,
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (dict(reason="flagged"), ["refused", "disagree", "unsure"]),
        (dict(reason="low_confidence"), ["unsure"]),
        (dict(without_patient=True), ["refused", "disagree"]),
        (dict(patient="p-2"), ["unsure"]),
        (dict(date_from=date(2000, 1, 1), date_to=date(2000, 1, 2)), []),
    ],
)
def test_the_queue_filters_by_reason_patient_and_date(worklist: dict[str, int], filters, expected) -> None:
    assert [e.scan_id for e in reads.queue(filters=QueueFilters(**filters))] == [worklist[k] for k in expected]


def test_the_queue_filters_by_batch_job_and_by_who_started_it(worklist: dict[str, int]) -> None:
    by_job = reads.queue(filters=QueueFilters(job_id=worklist["job"]))
    assert [e.scan_id for e in by_job] == [worklist["refused"], worklist["disagree"]]
    everyone, theirs = reads.awaiting_reads(user_id=make_actor("clinician", "dr-grey").user_id)
    assert (everyone.awaiting, everyone.flagged, theirs.awaiting) == (5, 3, 2)
    _, nobody_elses = reads.awaiting_reads(user_id=make_actor("clinician", "dr-yang").user_id)
    assert nobody_elses.awaiting == 0


def test_a_read_takes_a_scan_out_of_the_queue(worklist: dict[str, int]) -> None:
    reads.read_scan(make_actor("clinician"), scan_id=worklist["refused"], label="not_assessable", note=None)
    assert worklist["refused"] not in [e.scan_id for e in reads.queue(filters=QueueFilters())]
    assert reads.counts(filters=QueueFilters()).read == 2


# Patients for scans without one


def test_a_scan_without_a_patient_is_given_one_matched_by_id_and_audited(worklist: dict[str, int]) -> None:
    clinician = make_actor("clinician", "dr-grey")
    with session_scope() as session:
        session.add(BatchItem(job_id=worklist["job"], rel_path="p.jpg", status="done", scan_id=worklist["disagree"]))
    done = reads.give_patient(clinician, scan_id=worklist["disagree"], mrn=" p-1 ")
    assert (done.scan_id, done.mrn, done.joined) == (worklist["disagree"], "P-1", False)
    with session_scope() as session:
        entry = scan_entry(session=session, scan_id=worklist["disagree"])
        assert entry.patient_mrn == "P-1"
        assert session.scalar(select(BatchItem.patient_mrn).where(BatchItem.rel_path == "p.jpg")) == "P-1"
    [logged] = audit("scan_assigned")
    assert (logged.username, logged.patient_mrn, logged.target) == ("dr-grey", "P-1", f"scan {worklist['disagree']}")
    with pytest.raises(UserError, match="already belongs to patient P-1"):
        reads.give_patient(clinician, scan_id=worklist["disagree"], mrn="P-9")
    with pytest.raises(UserError, match="holds a backslash"):
        reads.give_patient(clinician, scan_id=worklist["refused"], mrn="P\\9")


def test_a_scan_given_to_a_patient_who_has_the_same_image_joins_that_scan(models: Models) -> None:
    theirs = save(models, "P-1", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    anonymous = save(models, None, "glioma", ("glioma", 0.95), ("glioma", 0.91))
    reads.read_scan(make_actor("clinician"), scan_id=anonymous, label="meningioma", note="seen on the ward")
    done = reads.give_patient(make_actor("clinician"), scan_id=anonymous, mrn="P-1")
    assert (done.scan_id, done.joined) == (theirs, True)
    with session_scope() as session:
        assert session.get(Scan, anonymous) is None
        entry = scan_entry(session=session, scan_id=theirs)
    # Nothing a clinician wrote is lost; the same model's answer on the same image is kept once.
    assert [(r.label, r.note) for r in entry.reads] == [("meningioma", "seen on the ward")]
    assert len(entry.predictions) == 2


# Merges


def add_twin(mrn: str) -> None:
    """A patient without a matching key: a twin as migration 0006 leaves those that existed before."""
    with session_scope() as session:
        session.execute(insert(Patient).values(mrn=mrn, mrn_key=None, created_at=utcnow()))


def test_an_admin_merges_a_twin_with_its_scans_answers_and_reads_audited_with_counts(models: Models) -> None:
    with session_scope() as session:
        session.add(Patient(mrn="MRN-4711"))
    add_twin("mrn-4711")
    save(models, "MRN-4711", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    with session_scope() as session:
        twin_id = session.scalar(select(Patient.id).where(Patient.mrn == "mrn-4711"))
        keep_id = get_patient(session=session, mrn="MRN-4711").id
    moved_scan = _scan_for(models, twin_id, "pituitary")
    same_image = _scan_for(models, twin_id, "glioma")
    reads.read_scan(make_actor("clinician"), scan_id=moved_scan, label="pituitary", note=None)
    reads.read_scan(make_actor("clinician"), scan_id=same_image, label="glioma", note=None)
    with pytest.raises(NotAllowed):
        records.merge(make_actor("clinician"), keep=(keep_id, "MRN-4711"), twin=(twin_id, "mrn-4711"))
    with pytest.raises(UserError, match="no longer mrn-4711-x"):
        records.merge(make_actor("admin"), keep=(keep_id, "MRN-4711"), twin=(twin_id, "mrn-4711-x"))
    moved = records.merge(make_actor("admin"), keep=(keep_id, "MRN-4711"), twin=(twin_id, "mrn-4711"))
    # The twin's glioma scan is the kept patient's glioma image: joined, its CNN answer the same as the one kept.
    assert (moved.scans, moved.joined, moved.predictions, moved.reads) == (2, 1, 1, 2)
    with session_scope() as session:
        assert session.get(Patient, twin_id) is None
        assert session.scalar(select(func.count(Scan.id)).where(Scan.patient_pk == keep_id)) == 2
        assert session.scalar(select(func.count(Prediction.id))) == 3
        assert session.scalar(select(func.count(Read.id))) == 2
    [entry] = audit("patient_merged")
    assert (entry.username, entry.patient_mrn, entry.target) == ("test-admin", "MRN-4711", f"patient {keep_id}")
    assert entry.detail.startswith(f"patient mrn-4711 (id {twin_id}) merged into MRN-4711 (id {keep_id}): ")
    assert "2 scan(s) moved, 1 of them joined to a scan of the same image, 1 prediction(s), 2 read(s)" in entry.detail


def test_a_merge_names_each_patient_by_id_and_patient_id_and_refuses_a_stale_or_gone_pair(models: Models) -> None:
    save(models, "MRN-1", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    save(models, "MRN-2", "pituitary", ("pituitary", 0.95), ("pituitary", 0.91))
    with session_scope() as session:
        first, second = (get_patient(session=session, mrn=m).id for m in ("MRN-1", "MRN-2"))
    admin = make_actor("admin")
    # The page still holds MRN-2 under the first patient's id: the kept side no longer goes with it.
    with pytest.raises(UserError, match=f"Patient {first} is no longer MRN-2: nothing was merged"):
        records.merge(admin, keep=(first, "MRN-2"), twin=(second, "MRN-2"))
    with pytest.raises(UserError, match=f"Patient {second + 1000} is no longer MRN-9: nothing was merged"):
        records.merge(admin, keep=(first, "MRN-1"), twin=(second + 1000, "MRN-9"))
    with pytest.raises(UserError, match="^Choose two different patients to merge.$"):
        records.merge(admin, keep=(first, "MRN-1"), twin=(first, "MRN-1"))
    with pytest.raises(NotAllowed, match="Only an admin may merge patients"):
        records.merge(make_actor("clinician"), keep=(first, "MRN-1"), twin=(second, "MRN-2"))
    with session_scope() as session:
        scans = {
            mrn: session.scalar(select(func.count(Scan.id)).join(Patient).where(Patient.mrn == mrn))
            for mrn in ("MRN-1", "MRN-2")
        }
    assert scans == {"MRN-1": 1, "MRN-2": 1} and audit("patient_merged") == []


def test_a_patient_is_deleted_only_under_the_patient_id_the_page_showed(models: Models) -> None:
    save(models, "MRN-1", "glioma", ("glioma", 0.95), ("glioma", 0.91))
    save(models, "MRN-2", "pituitary", ("pituitary", 0.95), ("pituitary", 0.91))
    with session_scope() as session:
        first, second = (get_patient(session=session, mrn=m).id for m in ("MRN-1", "MRN-2"))
    admin = make_actor("admin")
    # A page that holds a stale pair (the first patient's id with the second's patient id) deletes no one.
    with pytest.raises(UserError, match=f"Patient {first} is no longer MRN-2: nothing was deleted"):
        records.remove_patient(admin, patient_pk=first, mrn="MRN-2")
    with session_scope() as session:
        assert {session.get(Patient, pk).mrn for pk in (first, second)} == {"MRN-1", "MRN-2"}
        assert session.scalar(select(func.count(Prediction.id))) == 4
    assert audit("patient_deleted") == []
    removal = records.remove_patient(admin, patient_pk=first, mrn="MRN-1")
    assert (removal.scans, removal.predictions, removal.reads) == (1, 2, 0)
    with session_scope() as session:
        assert session.get(Patient, first) is None and session.get(Patient, second).mrn == "MRN-2"
        assert session.scalar(select(func.count(Prediction.id))) == 2
    [entry] = audit("patient_deleted")
    assert (entry.username, entry.patient_mrn, entry.target, entry.detail) == (
        "test-admin",
        "MRN-1",
        f"patient {first}",
        "1 scan(s), 2 prediction(s), 0 read(s)",
    )
    # A second click (another tab) finds the patient gone: nothing more is removed.
    again = records.remove_patient(admin, patient_pk=first, mrn="MRN-1")
    assert (again.scans, again.predictions, again.reads) == (0, 0, 0)


def _scan_for(models: Models, patient_pk: int, picture: str) -> int:
    """A scan saved straight under a patient id (a twin cannot be reached by its typed id)."""
    with session_scope() as session:
        mrn = session.get(Patient, patient_pk).mrn
    with session_scope() as session:
        patient = session.get(Patient, patient_pk)
        saved = save_scan_with_predictions(
            session=session,
            decoded=image(picture),
            patient_mrn=None,
            source="upload",
            results=[
                model_result(framework="torch", model_version_id=models.torch, probabilities=answer(picture, 0.9))
            ],
            threshold=0.7,
            original_name=f"{mrn}-{picture}.jpg",
        )
        saved.scan.patient_pk = patient.id
        return saved.scan.id


def test_a_merged_twin_leaves_its_key_to_the_patient_kept(models: Models) -> None:
    add_twin("mrn-4711")
    with session_scope() as session:
        session.add(Patient(mrn="MRN-4711"))
    with session_scope() as session:
        keyless = session.scalar(select(Patient).where(Patient.mrn == "mrn-4711"))
        keyed = session.scalar(select(Patient).where(Patient.mrn == "MRN-4711"))
        ids = (keyless.id, keyed.id)
    records.merge(make_actor("admin"), keep=(ids[0], "mrn-4711"), twin=(ids[1], "MRN-4711"))
    with session_scope() as session:
        assert get_patient(session=session, mrn="MRN-4711").id == ids[0]
