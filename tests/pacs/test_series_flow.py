"""A series from the hospital's network to its answer and back, through real parts: DCMTK's storescu sends to the
listener process, a real Celery worker predicts with the shipped models, Orthanc is the PACS that the series is
pulled from (QIDO-RS, WADO-RS) and that the results go to (C-STORE), and dciodvfy checks what was sent."""

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from db.deletion import delete_patient
from db.schema import DicomSend, Job, Prediction, Scan, SeriesSlice
from db.series import sends_of_series, series_with_uid
from db.session import session_scope
from domain import CLASSES
from scripts.dicom_peers import DCIODVFY, DICOMWEB_PLUGIN, ORTHANC, Orthanc, dciodvfy_errors, start_listener, storescu
from tests.env import environment
from tests.pacs.conftest import sample_slices, wait_for_series
from tests.skip import require_tools
from tests.users import make_actor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """The PACS series are pulled from."""
    require_tools(ORTHANC, DICOMWEB_PLUGIN)
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc-source")).start()
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def result_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """The PACS results go to: its ports are fixed now, but it starts only when a test starts it (it is down)."""
    require_tools(ORTHANC, DICOMWEB_PLUGIN)
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc-results"), aet="RESULTS")
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def pacs_settings(
    source_pacs: Orthanc, result_pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with environment(
        DICOMWEB_URL=source_pacs.dicomweb_url,
        DICOM_DESTINATION=result_pacs.destination,
        DICOM_SEND_RETRY_S="1",
        DICOM_SEND_RETRY_MAX_S="2",
        DICOM_SEND_ATTEMPTS="200",
        DICOM_SERIES_IDLE_S="1.5",
        DICOM_SPOOL_DIR=str(tmp_path_factory.mktemp("spool")),
    ):
        yield


@pytest.fixture(scope="module")
def worker(pacs_settings: None, module_db_url: str, shipped_models: list[int], start_worker: Callable):  # type: ignore[no-untyped-def]
    process = start_worker()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def listener(worker, dcmtk: None, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    process = start_listener(tmp_path_factory.mktemp("listener"))
    yield process
    process.stop()


def series_uid_of(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def counts(series_uid: str) -> tuple[int, int, list[int]]:
    """(slices, predictions of its scans, ids of the series jobs that named it)."""
    with session_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        assert series is not None
        slices = session.scalar(select(func.count()).where(SeriesSlice.series_id == series.id))
        scan_ids = select(SeriesSlice.scan_id).where(SeriesSlice.series_id == series.id)
        predictions = session.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.scan_id.in_(scan_ids))
        )
        jobs = [
            j.id
            for j in session.scalars(select(Job).where(Job.kind == "series"))
            if j.params.get("series_id") == series.id
        ]
        return slices or 0, predictions or 0, jobs


def answer_of(series_uid: str) -> dict:
    with session_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        assert series is not None and series.answer is not None
        return dict(series.answer)


def test_a_series_from_storescu_is_answered_and_the_same_series_pulled_from_the_pacs_gets_the_same_answer(
    listener, source_pacs: Orthanc, write_series, wait_for_job, tmp_path: Path
) -> None:
    files = write_series(sample_slices(notumor=14, pituitary=6), patient_id="P-SERIES-1")
    study_uid, series_uid = series_uid_of(files[0])

    sent = storescu(listener.port, listener.aet, files)
    assert sent.returncode == 0, sent.stderr
    wait_for_series(series_uid)
    slices, predictions, jobs = counts(series_uid)
    assert (slices, predictions, len(jobs)) == (20, 40, 1)
    answer = answer_of(series_uid)
    assert answer["label"] == "pituitary"
    assert answer["accepted"] == 20 and set(answer["probabilities"]) == set(CLASSES)
    assert len(answer["ranking"]) == 20 and answer["deciding"][0] == answer["ranking"][0]
    assert wait_for_job(jobs[0]).status == "succeeded"
    with session_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        assert series is not None and series.patient is not None and series.patient.mrn == "P-SERIES-1"
        patient_pk = series.patient.id
        staged = session.scalars(select(SeriesSlice.staged_file).where(SeriesSlice.series_id == series.id)).all()
        names = session.scalars(select(Scan.original_name)).all()
    # The received files are gone once predicted; no name, birth date or institution reached a row.
    assert staged and all(s is None for s in staged)
    assert not any("Doe" in n or "General Hospital" in n for n in names)

    # The same files in the PACS; the series deleted here and pulled back by QIDO-RS and WADO-RS.
    assert storescu(source_pacs.dicom_port, source_pacs.aet, files).returncode == 0
    with session_scope() as session:
        delete_patient(session=session, patient_pk=patient_pk)
    from services.dicomweb import search_series, search_studies
    from worker.submit import submit_pull

    actor = make_actor("clinician")
    [study] = search_studies(actor, patient_id="P-SERIES-1")
    assert study.study_uid == study_uid and "MR" in study.modalities
    [found] = search_series(actor, study_uid=study_uid)
    assert (found.series_uid, found.instances) == (series_uid, 20)
    job = wait_for_job(submit_pull(actor, study_uid=study_uid, series_uid=series_uid), timeout=240)
    assert job.status == "succeeded", job.error
    assert job.result["pulled"] == 20
    pulled = answer_of(series_uid)
    assert pulled["label"] == answer["label"]
    assert pulled["probabilities"] == pytest.approx(answer["probabilities"], abs=1e-6)
    assert counts(series_uid)[:2] == (20, 40)


def test_slices_that_arrive_twice_are_predicted_once(listener, write_series) -> None:
    files = write_series(sample_slices(notumor=5, glioma=3), patient_id="P-TWICE")
    _, series_uid = series_uid_of(files[0])
    # Three slices twice in the first association, then the whole series again once it is answered.
    assert storescu(listener.port, listener.aet, [*files, *files[:3]]).returncode == 0
    wait_for_series(series_uid)
    assert storescu(listener.port, listener.aet, files).returncode == 0
    time.sleep(4)  # past DICOM_SERIES_IDLE_S: a series with something new would be queued again by now
    slices, predictions, jobs = counts(series_uid)
    assert (slices, predictions, len(jobs)) == (8, 16, 1)
    assert wait_for_series(series_uid).status == "answered"


def test_results_wait_while_the_pacs_is_down_then_arrive_and_read_back_and_pass_dciodvfy(
    listener, result_pacs: Orthanc, write_series, wait_for_job, tmp_path: Path
) -> None:
    require_tools(DCIODVFY)
    files = write_series(sample_slices(notumor=4, glioma=2), patient_id="P-RESULTS")
    study_uid, series_uid = series_uid_of(files[0])
    assert storescu(listener.port, listener.aet, files).returncode == 0
    wait_for_series(series_uid)
    answer = answer_of(series_uid)

    # The results' PACS is down: the send is tried again and again, and its job says so.
    deadline = time.monotonic() + 60
    while True:
        with session_scope() as session:
            series = series_with_uid(session=session, series_uid=series_uid)
            sends = sends_of_series(session=session, series_id=series.id) if series else []
            send = sends[0] if sends else None
            job = session.get(Job, send.job_id) if send is not None and send.job_id else None
            seen = (
                (send.attempts, send.status, job.status if job else None, job.message if job else None)
                if send
                else None
            )
        if seen is not None and seen[0] >= 2:
            break
        assert time.monotonic() < deadline, f"the send was not retried: {seen}"
        time.sleep(0.5)
    attempts, status, job_status, message = seen
    assert status == "pending" and job_status in ("queued", "running")
    assert job_status == "running" or "failed" in (message or "")

    result_pacs.start()
    assert wait_for_job(send.job_id, timeout=120).status == "succeeded"
    with session_scope() as session:
        delivered = session.get(DicomSend, send.id)
        assert delivered is not None and delivered.status == "sent" and delivered.attempts > attempts
        assert not Path(delivered.folder).exists()  # the outbox is emptied once the PACS has everything

    stored = result_pacs.instances_of_study(study_uid)
    reports = [pydicom.dcmread(io.BytesIO(i["file"])) for i in stored if i["MainDicomTags"].get("SOPInstanceUID")]
    sr = [ds for ds in reports if ds.Modality == "SR"]
    sc = [ds for ds in reports if ds.Modality != "SR"]
    assert len(sr) == 1 and len(sc) == 3
    assert {ds.StudyInstanceUID for ds in reports} == {study_uid}
    assert len({ds.SeriesInstanceUID for ds in reports} | {series_uid}) == 3
    content = flatten(sr[0].ContentSequence)
    finding = next(i for i in content if i.ConceptNameCodeSequence[0].CodeMeaning == "Finding")
    assert finding.ConceptCodeSequence[0].CodeValue == answer["label"]
    probabilities = {
        i.ConceptNameCodeSequence[0].CodeValue.removeprefix("p-"): float(i.MeasuredValueSequence[0].NumericValue)
        for i in content
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue.startswith("p-")
    }
    assert probabilities == pytest.approx(answer["probabilities"], abs=1e-6)
    assert (
        len(sr[0].CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence) == 6
    )
    for ds in sc:
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == "YES"
        assert "not for diagnosis" in ds.SeriesDescription.lower()
    for number, item in enumerate(stored):
        path = tmp_path / f"sent-{number}.dcm"
        path.write_bytes(item["file"])
        assert dciodvfy_errors(path) == []

    # A clinician's read goes out as an amended report that names the first as its predecessor.
    from datetime import datetime

    from worker.submit import submit_amended_report

    amended_job = submit_amended_report(
        series.id, label="meningioma", author="dr-lee", at=datetime(2026, 12, 6, 10, 30), note="on review"
    )
    assert amended_job is not None and wait_for_job(amended_job, timeout=60).status == "succeeded"
    new = [i for i in result_pacs.instances_of_study(study_uid) if i["ID"] not in {s["ID"] for s in stored}]
    [amended_sr] = [pydicom.dcmread(io.BytesIO(i["file"])) for i in new]
    assert (
        amended_sr.PredecessorDocumentsSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        == sr[0].SOPInstanceUID
    )
    read = next(
        i for i in flatten(amended_sr.ContentSequence) if i.ConceptNameCodeSequence[0].CodeValue == "clinician-read"
    )
    assert flatten(read.ContentSequence)[0].ConceptCodeSequence[0].CodeValue == "meningioma"
    path = tmp_path / "amended.dcm"
    amended_sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def flatten(items) -> list:  # type: ignore[no-untyped-def]
    """Every content item of an SR tree, depth first."""
    out = []
    for item in items:
        out.append(item)
        out += flatten(item.get("ContentSequence", []))
    return out
