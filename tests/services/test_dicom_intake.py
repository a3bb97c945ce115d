"""Instances coming in: what the intake refuses before anything is stored, and what it keeps."""

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from db.schema import DicomSeries
from db.session import session_scope
from scripts.make_series import enhanced_file, series_files
from services.dicom_instances import InstanceRefused
from services.dicom_intake import receive
from services.series import read_values, values_png
from settings import SAMPLE_DIR, get_settings
from tests.env import environment

IMAGES = sorted((SAMPLE_DIR / "notumor").glob("*.jpg"))


def test_an_instance_is_staged_under_its_series_with_its_position(any_db_url, tmp_path) -> None:
    with environment(DICOM_SPOOL_DIR=str(tmp_path)):
        got = [
            receive(data, source="upload", sender="test", settings=get_settings()) for data in series_files(IMAGES[:3])
        ]
    assert [g.new_slices for g in got] == [1, 1, 1] and len({g.series_id for g in got}) == 1
    with session_scope() as session:
        series = session.get(DicomSeries, got[0].series_id)
        assert series is not None and series.status == "receiving" and series.study_date == "2024-01-31"
        assert [s.position for s in series.slices] == [5.0, 10.0, 15.0]
        assert all(s.staged_file and s.staged_file.startswith(str(tmp_path)) for s in series.slices)


def test_a_deflated_instance_is_refused_before_it_is_inflated(db_url) -> None:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(series_files(IMAGES[:1])[0]))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(InstanceRefused, match="deflated"):
        receive(buffer.getvalue(), source="upload", sender="test")


def test_an_instance_over_the_size_limit_is_refused(db_url) -> None:
    data = enhanced_file(IMAGES[:12], size=256)
    with environment(MAX_UPLOAD_MB="1"), pytest.raises(InstanceRefused, match="over the limit of 1 MB"):
        receive(data, source="upload", sender="test", settings=get_settings())


def test_a_series_stops_growing_at_its_limit(db_url, tmp_path) -> None:
    files = series_files(IMAGES[:4])
    with environment(DICOM_MAX_SERIES_SLICES="3", DICOM_SPOOL_DIR=str(tmp_path)):
        for data in files[:3]:
            receive(data, source="upload", sender="test", settings=get_settings())
        with pytest.raises(InstanceRefused, match="most slices a series may"):
            receive(files[3], source="upload", sender="test", settings=get_settings())


def test_pixel_values_are_kept_exactly_for_window_and_level(tmp_path) -> None:
    scanner = np.arange(0, 4096, dtype=np.float32).reshape(64, 64) - 1024  # 12 bits, rescaled to negative too
    data, scale, offset = values_png(scanner)
    (tmp_path / "v.png").write_bytes(data)
    assert np.array_equal(read_values(tmp_path / "v.png", scale, offset), scanner)
    measured = np.linspace(0.0, 1.5, 100, dtype=np.float32).reshape(10, 10)  # a float rescale: to 1/65535 of its range
    data, scale, offset = values_png(measured)
    (tmp_path / "f.png").write_bytes(data)
    assert np.abs(read_values(tmp_path / "f.png", scale, offset) - measured).max() < 1.5 / 65535


def test_the_sweep_removes_the_staged_files_of_a_deleted_patients_series(any_db_url, tmp_path) -> None:
    import time

    from db.deletion import delete_patient
    from services.dicom_intake import sweep_spool

    with environment(DICOM_SPOOL_DIR=str(tmp_path)):
        kept = receive(series_files(IMAGES[:1], patient_id="P-KEEP")[0], source="upload", sender="test")
        gone = receive(series_files(IMAGES[1:2], patient_id="P-GONE")[0], source="upload", sender="test")
        with session_scope() as session:
            series = session.get(DicomSeries, gone.series_id)
            assert series is not None and series.patient_pk is not None
            delete_patient(session=session, patient_pk=series.patient_pk)
        assert (tmp_path / "series" / str(gone.series_id)).is_dir()
        assert sweep_spool(get_settings()) == 0  # within the grace period
        assert sweep_spool(get_settings(), now=time.time() + 2 * get_settings().orphan_grace_s) == 1
    assert not (tmp_path / "series" / str(gone.series_id)).exists()
    assert (tmp_path / "series" / str(kept.series_id)).is_dir()
