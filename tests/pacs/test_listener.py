"""The DICOM listener as a process of its own, against DCMTK's storescu and echoscu: what it accepts, what it
refuses at association or per instance, and that a refusal never stops it. No worker here: complete series
wait in the queue."""

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, RLELossless, generate_uid
from sqlalchemy import func, select

from db.schema import AuditEntry, DicomSeries, SeriesSlice
from db.series import series_with_uid
from db.session import session_scope
from scripts.dicom_peers import echo, start_listener, storescu
from scripts.make_series import enhanced_file
from tests.env import environment
from tests.pacs.conftest import sample_slices

ALLOWED = "STORESCU,ECHOSCU,MODALITY1"


@pytest.fixture(scope="module")
def listener(module_db_url: str, dcmtk: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    spool = tmp_path_factory.mktemp("spool")
    # Long idle time: the series stay "receiving", so what each test sent is still there to count.
    with environment(DICOM_ALLOWED_AETS=ALLOWED, DICOM_SERIES_IDLE_S="3600", DICOM_SPOOL_DIR=str(spool)):
        process = start_listener(tmp_path_factory.mktemp("listener"))
        yield process
        process.stop()


def stored(series_uid: str) -> int:
    with session_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        if series is None:
            return 0
        return session.scalar(select(func.count()).where(SeriesSlice.series_id == series.id)) or 0


def refusals(containing: str = "", timeout: float = 10.0) -> list[str]:
    """The listener's audited refusals, waiting up to `timeout` for one that contains `containing`: the
    listener writes them from its own threads, possibly after the sender is gone."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            found = [
                e.detail or "" for e in session.scalars(select(AuditEntry).where(AuditEntry.action == "dicom_refused"))
            ]
        if any(containing in r for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_it_answers_c_echo_from_an_allowed_ae(listener) -> None:
    assert echo(listener.port, listener.aet).returncode == 0


def test_a_ct_series_is_refused_at_association_and_never_stored(listener, write_series) -> None:
    files = write_series(sample_slices(notumor=3), modality="CT", sop_class=CTImageStorage)
    sent = storescu(listener.port, listener.aet, files, required_only=True)
    assert sent.returncode != 0
    assert "presentation context" in (sent.stdout + sent.stderr).lower()
    assert stored(uid_of(files[0])) == 0
    assert any("CT Image Storage" in r and "STORESCU" in r for r in refusals("CT Image Storage"))
    assert listener.alive()


def test_a_calling_ae_title_off_the_allow_list_is_refused(listener, write_series) -> None:
    files = write_series(sample_slices(notumor=2))
    sent = storescu(listener.port, listener.aet, files, calling="INTRUDER")
    assert sent.returncode != 0
    assert "calling ae title not recognized" in (sent.stdout + sent.stderr).lower()
    assert stored(uid_of(files[0])) == 0
    assert any("INTRUDER" in r and "DICOM_ALLOWED_AETS" in r for r in refusals("INTRUDER"))


def test_malformed_instances_are_refused_one_by_one_and_the_listener_goes_on(listener, write_series, tmp_path) -> None:
    [good, no_pixels, bad_uid, wrong_modality] = write_series(sample_slices(notumor=4))
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels, enforce_file_format=True)
    ds = pydicom.dcmread(bad_uid)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        ds.StudyInstanceUID = "not.a.uid"
    ds.save_as(bad_uid, enforce_file_format=True)
    ds = pydicom.dcmread(wrong_modality)
    ds.Modality = "CT"
    ds.save_as(wrong_modality, enforce_file_format=True)
    sent = storescu(listener.port, listener.aet, [no_pixels, bad_uid, wrong_modality, good])
    assert (sent.stdout + sent.stderr).count("Error: DataSetDoesNotMatchSOPClass") == 3, sent.stdout + sent.stderr
    assert stored(uid_of(good)) == 1
    assert listener.alive() and echo(listener.port, listener.aet).returncode == 0
    [summary] = [r for r in refusals("3 instance(s) refused") if "3 instance(s) refused" in r]
    assert "no pixel data" in summary and "not a valid UID" in summary and "not MR" in summary


def test_a_multi_frame_instance_is_one_slice_per_frame_in_position_order(listener, tmp_path) -> None:
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(enhanced_file(sample_slices(notumor=3, glioma=2), syntax=RLELossless, patient_id="P-MF"))
    assert storescu(listener.port, listener.aet, [path], options=["-xr"]).returncode == 0
    series_uid = uid_of(path)
    with session_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        assert series is not None
        rows = [(s.frame, s.position) for s in series.slices]
        staged = [Path(s.staged_file) for s in series.slices if s.staged_file]
    assert [f for f, _ in rows] == [1, 2, 3, 4, 5]
    assert [p for _, p in rows] == sorted(p for _, p in rows) and rows[0][1] != rows[-1][1]
    # Each frame is staged as a single-frame file the decode path reads, with the frame's own position.
    from models.data.imaging import decode_image

    first = decode_image(staged[0].read_bytes(), staged[0].name, max_bytes=2**26, max_pixels=2**24)
    assert first.values is not None and first.window == (2000.0, 4000.0)


def test_an_instance_sent_twice_is_one_slice(listener, write_series) -> None:
    files = write_series(sample_slices(notumor=3))
    assert storescu(listener.port, listener.aet, [*files, files[0], files[0]]).returncode == 0
    assert storescu(listener.port, listener.aet, files).returncode == 0
    assert stored(uid_of(files[0])) == 3


def test_a_later_instance_naming_another_patient_is_refused(listener, write_series) -> None:
    files = write_series(sample_slices(notumor=2), patient_id="P-A")
    ds = pydicom.dcmread(files[1])
    ds.PatientID = "P-B"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(files[1], enforce_file_format=True)
    storescu(listener.port, listener.aet, files)
    assert stored(uid_of(files[0])) == 1
    assert any("PatientID differs" in r for r in refusals("PatientID differs"))


def test_a_hospital_patient_id_is_kept_as_written(listener, write_series) -> None:
    files = write_series(sample_slices(notumor=2), patient_id="HOSP 123/456")
    assert storescu(listener.port, listener.aet, files).returncode == 0
    with session_scope() as session:
        series = session.scalar(select(DicomSeries).where(DicomSeries.series_uid == uid_of(files[0])))
        assert series is not None and series.patient is not None
        assert series.patient.mrn == "HOSP 123/456"


def test_an_instance_over_the_size_limit_is_cut_off_on_the_way(module_db_url: str, dcmtk: None, tmp_path) -> None:
    with environment(MAX_UPLOAD_MB="1", DICOM_SPOOL_DIR=str(tmp_path / "spool")):
        small = start_listener(tmp_path)
        try:
            path = tmp_path / "big.dcm"
            path.write_bytes(enhanced_file(sample_slices(notumor=20), size=256))  # 2.6 MB of pixels
            sent = storescu(small.port, small.aet, [path])
            assert sent.returncode != 0
            assert stored(uid_of(path)) == 0
            assert any("more than 1 MB" in r for r in refusals("more than 1 MB"))
            assert small.alive() and echo(small.port, small.aet).returncode == 0
        finally:
            small.stop()
