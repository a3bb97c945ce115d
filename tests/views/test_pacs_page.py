"""The PACS page against a real Orthanc with its DICOMweb plugin: search (QIDO-RS), open a study, send an MR
series to the prediction queue; and a series uploaded by hand through the same intake."""

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from db.schema import AuditEntry, DicomSeries, Job
from db.session import session_scope
from domain import UserError
from scripts.dicom_peers import DICOMWEB_PLUGIN, ORTHANC, Orthanc, storescu
from scripts.make_series import enhanced_file, series_files
from services.dicom_intake import receive_files
from settings import ROOT, SAMPLE_DIR
from tests.env import environment
from tests.skip import require_tools
from tests.users import make_actor, signed_in
from worker.submit import submit_intake

PAGE = str(ROOT / "views" / "11_PACS.py")
IMAGES = sorted((SAMPLE_DIR / "meningioma").glob("*.jpg"))[:3]


@pytest.fixture(scope="module")
def pacs(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, str, str]]:
    """Orthanc holding one MR series of patient HOSP-9; (server, study UID, series UID)."""
    require_tools("storescu")
    require_tools(ORTHANC, DICOMWEB_PLUGIN)
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    folder = tmp_path_factory.mktemp("series")
    paths = []
    for number, data in enumerate(series_files(IMAGES, patient_id="HOSP-9"), start=1):
        paths.append(folder / f"{number}.dcm")
        paths[-1].write_bytes(data)
    assert storescu(orthanc.dicom_port, orthanc.aet, paths).returncode == 0
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    spool = tmp_path_factory.mktemp("spool")
    with environment(DICOMWEB_URL=orthanc.dicomweb_url, DICOM_SPOOL_DIR=str(spool)):
        yield orthanc, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    orthanc.stop()


def page() -> AppTest:
    at = signed_in(AppTest.from_file(PAGE, default_timeout=60), role="clinician")
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_a_clinician_finds_the_study_and_sends_its_mr_series_to_prediction(pacs) -> None:
    _, study_uid, series_uid = pacs
    at = page()
    at.text_input(key="pacs_patient_id").input("HOSP-*")
    at.button[0].click().run()  # the search form's submit button
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    [studies, *_] = at.dataframe
    assert list(studies.value["Patient id"]) == ["HOSP-9"]
    at.selectbox(key="pacs_study").select(study_uid).run()
    [_, series] = at.dataframe
    assert list(series.value["Modality"]) == ["MR"] and list(series.value["Instances"]) == [3]
    at.button(key="pacs_send").click().run()
    assert not at.exception
    with session_scope() as session:
        [job] = session.scalars(select(Job).where(Job.kind == "series")).all()
        searched = session.scalars(select(AuditEntry).where(AuditEntry.action == "pacs_searched")).all()
    assert job.params["pull"] == {"study_uid": study_uid, "series_uid": series_uid}
    assert job.submitted_by == make_actor("clinician").user_id
    assert searched and "HOSP-*" in (searched[-1].detail or "")
    assert any(f"Job {job.id}" in m.value for m in at.markdown)


def test_a_search_a_person_cannot_mean_is_refused_in_words(pacs) -> None:
    at = page()
    at.text_input(key="pacs_patient_id").input("A\\B")
    at.button[0].click().run()
    assert any("without backslashes" in e.value for e in at.error)


@pytest.mark.slow
def test_an_unreachable_server_is_said_so(pacs, tmp_path: Path) -> None:
    with environment(DICOMWEB_URL="http://127.0.0.1:9/dicom-web"):
        at = page()
        at.button[0].click().run()
    assert any("did not answer" in e.value for e in at.error)


def test_a_zip_of_one_series_and_a_multi_frame_file_uploaded_by_hand_each_become_a_series(pacs) -> None:
    actor = make_actor("clinician")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number, data in enumerate(series_files(IMAGES, patient_id="P-ZIP"), start=1):
            archive.writestr(f"series/{number}.dcm", data)
        archive.writestr("series/notes.txt", "not an image")
    uploads = [("series.zip", buffer.getvalue()), ("volume.dcm", enhanced_file(IMAGES, patient_id="P-MF"))]
    intake = receive_files(actor, uploads)
    queued = submit_intake(intake, actor=actor, origin="an upload")
    assert len(queued) == 2 and intake.slices == 6
    assert intake.refused == [("series.zip/series/notes.txt", "not a DICOM file")]
    with session_scope() as session:
        rows = session.scalars(select(DicomSeries).where(DicomSeries.id.in_(queued))).all()
        assert (
            sorted((r.source, r.sender, r.status, len(r.slices)) for r in rows)
            == [("upload", actor.username, "queued", 3)] * 2
        )
    # The same upload again adds nothing and queues nothing.
    assert submit_intake(receive_files(actor, uploads), actor=actor, origin="an upload") == {}


def test_a_zip_bomb_is_refused_before_anything_is_read(pacs) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.dcm", b"\0" * (8 * 2**20))
    with pytest.raises(UserError, match="zip bomb"):
        receive_files(make_actor("clinician"), [("bomb.zip", buffer.getvalue())])
