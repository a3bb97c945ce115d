import hashlib
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from db.runs import register_model_version
from db.schema import Scan
from db.session import get_sessionmaker, session_scope
from db.storage import delete_scan_file_if_unused, store_scan_file
from models.data.imaging import decode_image
from services.diagnosis import model_result, save_scan_with_predictions
from settings import SAMPLE_DIR, get_settings


def decoded_sample():
    path = sorted((SAMPLE_DIR / "notumor").glob("*.jpg"))[0]
    return decode_image(path.read_bytes(), path.name, max_bytes=2**24, max_pixels=10**7)


def save_for(mrn: str | None, version_id: int) -> int:
    with session_scope() as session:
        saved = save_scan_with_predictions(
            session=session,
            decoded=decoded_sample(),
            patient_mrn=mrn,
            source="upload",
            results=[model_result(framework="torch", model_version_id=version_id, probabilities=[0.1, 0.1, 0.7, 0.1])],
            threshold=0.7,
            original_name="scan.jpg",
        )
        return saved.scan.id


@pytest.fixture
def version_id(db_url: str) -> int:
    with session_scope() as session:
        return register_model_version(
            session=session, framework="torch", name="cnn", artifact_path="/nowhere/cnn.pth", sha256="a" * 64
        ).id


def test_a_file_is_stored_once_under_its_sha256(db_url):
    data = b"\x89PNG fake but bytes are bytes"
    sha = hashlib.sha256(data).hexdigest()
    first = store_scan_file(data=data, sha256=sha, suffix=".png")
    assert store_scan_file(data=data, sha256=sha, suffix=".png") == first
    assert first == get_settings().upload_dir / sha[:2] / f"{sha}.png" and first.read_bytes() == data
    assert [p.name for p in first.parent.iterdir()] == [first.name]
    with pytest.raises(ValueError):
        store_scan_file(data=data + b"!", sha256=sha, suffix=".png")


def test_the_same_image_for_two_patients_is_two_scans_sharing_one_file(db_url, version_id):
    scan_ids = {save_for("P-1", version_id), save_for("P-2", version_id), save_for("P-1", version_id)}
    with session_scope() as session:
        paths = set(session.scalars(select(Scan.file_path)))
    assert len(scan_ids) == 2 and len(paths) == 1


def test_a_file_is_removed_only_when_its_last_scan_is_deleted_and_committed(db_url, version_id):
    first, second = save_for("P-1", version_id), save_for("P-2", version_id)
    decoded = decoded_sample()
    path = Path(get_settings().upload_dir / decoded.sha256[:2] / f"{decoded.sha256}.jpg")
    with session_scope() as session:
        session.execute(delete(Scan).where(Scan.id == first))
        assert not delete_scan_file_if_unused(session=session, sha256=decoded.sha256, path=path)
    with get_sessionmaker()() as session:
        with session.begin():
            session.execute(delete(Scan).where(Scan.id == second))
            assert delete_scan_file_if_unused(session=session, sha256=decoded.sha256, path=path)
            session.rollback()
        # The same session commits other work later: the rolled-back deletion must not take the file with it.
        with session.begin():
            session.execute(select(Scan.id))
    assert path.is_file()
    with session_scope() as session:
        session.execute(delete(Scan).where(Scan.id == second))
        delete_scan_file_if_unused(session=session, sha256=decoded.sha256, path=path)
        assert path.is_file()
    assert not path.exists()


def test_a_file_outside_the_upload_dir_is_never_removed(db_url, version_id, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"not ours")
    scan_id = save_for("P-1", version_id)
    with session_scope() as session:
        session.execute(delete(Scan).where(Scan.id == scan_id))
        assert not delete_scan_file_if_unused(session=session, sha256=decoded_sample().sha256, path=outside)
    assert outside.read_bytes() == b"not ours"
