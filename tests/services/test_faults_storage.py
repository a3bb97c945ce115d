"""Scan files under faults: a full disk, and a delete or the sweep racing a save. No row may point at a missing file, and no
file may be left that nothing refers to."""

import io
import os
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import Patient, Scan
from db.session import session_scope
from db.storage import StorageFull, store_scan_file
from models.data.imaging import DecodedImage, decode_image
from services.batch_input import zip_source
from services.cleanup import sweep_files
from services.diagnosis import save_scan_with_predictions
from services.records import remove_patient
from settings import SAMPLE_DIR, get_settings
from tests.disks import fill, tmpfs
from tests.users import make_actor

# Long enough for a step that is not blocked to finish; a step the fix makes wait just goes on after it.
STEP_WAIT_S = 2.0


def sample_image(index: int = 0) -> DecodedImage:
    path = sorted(SAMPLE_DIR.rglob("*.jpg"))[index]
    return decode_image(path.read_bytes(), path.name, max_bytes=2**24, max_pixels=2**24)


def save(decoded: DecodedImage, mrn: str | None) -> int:
    with session_scope() as session:
        saved = save_scan_with_predictions(
            session=session,
            decoded=decoded,
            patient_mrn=mrn,
            source="upload",
            results=[],
            threshold=0.7,
            original_name="scan.jpg",
        )
        return saved.scan.id


def scan_files_are_all_there() -> list[tuple[int, str]]:
    """(id, path) of every scan row whose file is missing."""
    with session_scope() as session:
        rows = session.execute(select(Scan.id, Scan.file_path)).all()
    return [(scan_id, path) for scan_id, path in rows if not Path(path).is_file()]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def full_disk(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """UPLOAD_DIR on a real 1 MB tmpfs, filled to the last byte; skipped where tmpfs cannot be mounted."""
    with tmpfs(tmp_path / "full", "1m") as folder:
        fill(folder)
        monkeypatch.setenv("UPLOAD_DIR", str(folder))
        get_settings.cache_clear()
        try:
            yield folder
        finally:
            monkeypatch.undo()
            get_settings.cache_clear()


def test_a_scan_saved_onto_a_full_disk_fails_in_words_and_leaves_no_row_and_no_file(full_disk: Path) -> None:
    with pytest.raises(StorageFull, match=f"There is no space left under {full_disk}: the scan was not stored"):
        save(sample_image(), "P-FULL")
    with session_scope() as session:
        assert session.scalars(select(Scan)).all() == []
        assert session.scalar(select(Patient).where(Patient.mrn == "P-FULL")) is None
    assert files_under(full_disk) == [full_disk / "filler"]


def test_a_zip_unpacked_onto_a_full_disk_is_refused_in_words_and_leaves_no_file(full_disk: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(4):
            archive.write(sorted(SAMPLE_DIR.rglob("*.jpg"))[index], f"P-{index}/scan.jpg")
    with pytest.raises(StorageFull, match="There is no space left under .*: the zip was not unpacked"):
        zip_source(buffer.getvalue(), "export.zip", settings=get_settings())
    assert files_under(full_disk) == [full_disk / "filler"]
    # Space again: the same zip unpacks.
    (full_disk / "filler").unlink()
    assert zip_source(buffer.getvalue(), "export.zip", settings=get_settings())["source"] == "zip"


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(target())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def save_when_called(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, path: Path, decoded: DecodedImage, mrn: str
) -> Callable[[], object]:
    """The first time `owner.name` is called with `path` as its first argument, a save of `decoded` starts in a
    thread; the call goes on once the save has finished, or has waited STEP_WAIT_S for a lock the caller holds.
    Returns a function that waits for the save and gives its scan id (or its exception)."""
    real = getattr(owner, name)
    saves: list[tuple[threading.Thread, list[object]]] = []

    def called(first: object, *args: object, **kwargs: object) -> object:
        if first == path and not saves:
            saves.append(_in_thread(lambda: save(decoded, mrn)))
            saves[0][0].join(STEP_WAIT_S)
        return real(first, *args, **kwargs)

    monkeypatch.setattr(owner, name, called)

    def outcome() -> object:
        assert saves, f"{name} was never called for {path}"
        saves[0][0].join(60)
        return saves[0][1][0]

    return outcome


def test_a_delete_while_a_save_holds_the_stored_file_leaves_the_file_for_the_save(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.diagnosis

    decoded = sample_image()
    save(decoded, "P-OLD")
    with session_scope() as session:
        old = session.scalar(select(Patient).where(Patient.mrn == "P-OLD"))
    # The save (of the same image, for no patient) finds the file in place; the delete of the only other scan
    # of that image runs before the save commits its row.
    stored, deleted = threading.Event(), threading.Event()
    real_store = services.diagnosis.store_scan_file

    def store_then_let_the_delete_run(**kwargs: object) -> Path:
        path = real_store(**kwargs)
        stored.set()
        deleted.wait(STEP_WAIT_S)
        return path

    monkeypatch.setattr(services.diagnosis, "store_scan_file", store_then_let_the_delete_run)
    saver, saved = _in_thread(lambda: save(decoded, None))
    assert stored.wait(30)
    deleter, removal = _in_thread(lambda: remove_patient(make_actor(), patient_pk=old.id, mrn="P-OLD"))
    deleter.join(60)
    deleted.set()
    saver.join(60)
    deleter.join(60)
    assert isinstance(saved[0], int) and not isinstance(removal[0], Exception), (saved, removal)
    assert scan_files_are_all_there() == []
    with session_scope() as session:
        assert session.scalar(select(Patient).where(Patient.mrn == "P-OLD")) is None
        assert session.get(Scan, saved[0]).sha256 == decoded.sha256


def test_a_save_between_a_delete_and_its_file_removal_keeps_its_file(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = sample_image(1)
    save(decoded, "P-OLD")
    with session_scope() as session:
        old = session.scalar(select(Patient).where(Patient.mrn == "P-OLD"))
        stored_path = Path(session.scalar(select(Scan.file_path).where(Scan.patient_pk == old.id)))
    # The delete has committed and is about to remove the file no row refers to; a save of the same image for
    # another patient runs right then.
    saved = save_when_called(monkeypatch, Path, "unlink", stored_path, decoded, "P-NEW")
    remove_patient(make_actor(), patient_pk=old.id, mrn="P-OLD")
    scan_id = saved()
    assert isinstance(scan_id, int), scan_id
    assert scan_files_are_all_there() == []
    with session_scope() as session:
        assert session.get(Scan, scan_id).patient.mrn == "P-NEW"


def failed_save_file(decoded: DecodedImage) -> Path:
    """The file of a save that failed after writing it, two hours ago: past the sweep's grace."""
    path = store_scan_file(data=decoded.stored_bytes, sha256=decoded.sha256, suffix=decoded.stored_suffix)
    then = path.stat().st_mtime - 2 * get_settings().orphan_grace_s
    os.utime(path, (then, then))
    return path


def test_a_save_while_the_sweep_decides_a_file_is_unreferenced_keeps_its_file(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.cleanup

    decoded = sample_image(2)
    orphan = failed_save_file(decoded)
    # The sweep has read the rows (none for this image) and is checking the file's age; a save of the same
    # image, which finds the file in place, runs right then.
    saved = save_when_called(monkeypatch, services.cleanup, "_older_than", orphan, decoded, "P-SWEPT")
    sweep_files()
    assert isinstance(saved(), int)
    assert scan_files_are_all_there() == []
    assert orphan.is_file()


def test_a_save_while_the_sweep_removes_a_file_writes_it_again(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = sample_image(3)
    orphan = failed_save_file(decoded)
    # The sweep is removing the file; a save of the same image starts right then and waits for it.
    saved = save_when_called(monkeypatch, Path, "unlink", orphan, decoded, "P-SWEPT")
    assert sweep_files().scan_files == 1
    assert isinstance(saved(), int)
    assert scan_files_are_all_there() == []
    assert orphan.read_bytes() == decoded.stored_bytes
