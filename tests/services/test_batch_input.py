"""What a batch may read: folders under the allowed roots only, and uploaded zips checked before unpacking."""

import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from services.batch_input import (
    BatchInputError,
    check_patient_mode,
    extract_zip,
    folder_patient,
    list_folder,
    resolve_folder,
    true_label,
    unwrap,
    upload_folder,
    zip_source,
)
from settings import SAMPLE_DIR, Settings


def make_zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def sample_jpegs(count: int) -> list[Path]:
    return sorted(SAMPLE_DIR.rglob("*.jpg"))[:count]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        upload_dir=tmp_path / "scans", allowed_data_roots=[tmp_path / "root"], max_zip_mb=1, max_zip_files=5
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "batch").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


def test_a_folder_under_a_root_resolves_to_its_real_path(root: Path) -> None:
    assert resolve_folder(f"{root}/batch/../batch/", roots=[root]) == (root / "batch").resolve()


def test_a_folder_elsewhere_is_refused_with_the_allowed_roots(root: Path) -> None:
    with pytest.raises(BatchInputError, match=r"/etc is outside the allowed data folders \(.*root\)"):
        resolve_folder("/etc", roots=[root])


def test_climbing_out_with_dots_is_refused_and_named(root: Path) -> None:
    with pytest.raises(BatchInputError, match="climbs out of them with '..'"):
        resolve_folder(f"{root}/batch/../../outside", roots=[root])


def test_a_symlink_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(
        BatchInputError, match=f"symbolic link on the way leads outside them, to {tmp_path / 'outside'}"
    ):
        resolve_folder(str(root / "link"), roots=[root])


def test_a_relative_path_is_refused(root: Path) -> None:
    with pytest.raises(BatchInputError, match="not a full path"):
        resolve_folder("batch", roots=[root])


def test_listing_finds_images_recursively_and_names_what_it_skips(root: Path, tmp_path: Path, dicom_bytes) -> None:
    batch = root / "batch"
    (batch / "P-1" / "deep").mkdir(parents=True)
    jpeg = sample_jpegs(1)[0]
    shutil.copy(jpeg, batch / "P-1" / "deep" / "a.JPG")
    (batch / "P-1" / "scan0001").write_bytes(dicom_bytes())  # DICOM without an extension
    (batch / "notes.txt").write_text("not a scan")
    (batch / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "outside" / "secret.jpg").write_bytes(jpeg.read_bytes())
    (batch / "leak.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    (batch / "elsewhere").symlink_to(tmp_path / "outside")
    listing = list_folder(batch)
    assert listing.images == ["P-1/deep/a.JPG", "P-1/scan0001"]
    reasons = dict(listing.skipped)
    assert set(reasons) == {".DS_Store", "elsewhere/", "leak.jpg", "notes.txt"}
    assert "not a JPEG, PNG or DICOM" in reasons["notes.txt"]
    assert "leading outside the folder" in reasons["leak.jpg"]


def test_labels_and_patients_come_from_folder_names() -> None:
    assert true_label("P-1/Glioma/x.jpg") == "glioma" and true_label("glioma.jpg") is None
    assert folder_patient("P-1/glioma/x.jpg") == ("P-1", None)
    assert folder_patient("x.jpg")[0] is None
    # Folder names are patient ids as hospitals write them, spaces and Unicode letters included.
    assert folder_patient("Müller-01 /x.jpg") == ("Müller-01", None)
    with pytest.raises(BatchInputError, match=r"'Jane\\Doe' is not a usable patient id\. .* no backslash"):
        folder_patient("Jane\\Doe/x.jpg")


def test_single_patient_mode_needs_a_valid_id() -> None:
    assert check_patient_mode("single", " P-7 ") == "P-7"
    with pytest.raises(BatchInputError, match="Enter the patient id"):
        check_patient_mode("single", "")
    with pytest.raises(BatchInputError, match="Unknown patient mode"):
        check_patient_mode("ward", None)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.jpg", "'../evil.jpg' uses '..'"),
        ("ok/../../evil.jpg", "uses '..'"),
        ("/etc/cron.d/x", "absolute path"),
        ("C:/windows/x.jpg", "absolute path"),
        ("..\\evil.jpg", "uses '..'"),
    ],
)
def test_a_zip_entry_that_leaves_the_folder_refuses_the_whole_zip(settings: Settings, name: str, message: str) -> None:
    data = make_zip({"fine.jpg": sample_jpegs(1)[0].read_bytes(), name: b"x"})
    with pytest.raises(BatchInputError, match=message):
        zip_source(data, "upload.zip", settings=settings)
    assert not (settings.upload_dir / "batches").exists() or not any((settings.upload_dir / "batches").iterdir())


def test_a_zip_bomb_is_refused_by_its_ratio(settings: Settings) -> None:
    with pytest.raises(BatchInputError, match="possible zip bomb: its entry 'zeros.jpg' unpacks"):
        extract_zip(make_zip({"zeros.jpg": bytes(3 << 20)}), settings=settings)


def test_a_zip_bomb_is_refused_by_its_total_size(settings: Settings) -> None:
    # Each entry is under the size at which a ratio counts; together they unpack past 4 x the 1 MB limit.
    entries = {f"{i}.jpg": bytes((1 << 20) - 1) for i in range(5)}
    with pytest.raises(BatchInputError, match="unpacks to 5 MB, more than the limit of 4 MB"):
        extract_zip(make_zip(entries), settings=settings)


def test_a_zip_over_the_limits_is_refused(settings: Settings) -> None:
    with pytest.raises(BatchInputError, match="holds 6 files, more than the limit of 5"):
        extract_zip(make_zip({f"{i}.jpg": b"x" for i in range(6)}), settings=settings)
    with pytest.raises(BatchInputError, match="over the limit of 1 MB"):
        extract_zip(os.urandom((1 << 20) + 1), settings=settings)
    with pytest.raises(BatchInputError, match="not a readable zip"):
        extract_zip(b"PK\x03\x04 truncated", settings=settings)


def test_a_valid_zip_is_unpacked_into_its_own_folder_and_read_from_inside_its_wrapper(settings: Settings) -> None:
    first, second = sample_jpegs(2)
    data = make_zip({"export/P-1/a.jpg": first.read_bytes(), "export/P-2/b.jpg": second.read_bytes()})
    upload_id = zip_source(data, "export.zip", settings=settings)["upload"]
    folder = upload_folder(upload_id, settings=settings)
    assert folder.parent == settings.upload_dir / "batches"
    assert (folder / "export" / "P-1" / "a.jpg").read_bytes() == first.read_bytes()
    assert list_folder(unwrap(folder)).images == ["P-1/a.jpg", "P-2/b.jpg"]


def test_a_zip_of_one_patient_or_class_folder_keeps_that_folder(settings: Settings) -> None:
    jpeg = sample_jpegs(1)[0].read_bytes()
    for top in ("P-9", "glioma"):
        folder = upload_folder(extract_zip(make_zip({f"{top}/a.jpg": jpeg}), settings=settings), settings=settings)
        assert list_folder(unwrap(folder)).images == [f"{top}/a.jpg"]


def test_a_named_pipe_is_skipped_without_being_opened(root: Path) -> None:
    import os

    folder = root / "with-pipe"
    folder.mkdir()
    os.mkfifo(folder / "scan.jpg")
    os.mkfifo(folder / "noext")  # no suffix: the DICOM sniffing would open it and wait for ever
    listing = list_folder(folder)
    assert listing.images == []
    assert dict(listing.skipped) == {
        "scan.jpg": "not a regular file (a pipe, socket or device)",
        "noext": "not a regular file (a pipe, socket or device)",
    }


def test_a_zip_with_a_file_and_a_folder_of_one_name_is_refused_in_words(settings: Settings) -> None:
    jpeg = sample_jpegs(1)[0].read_bytes()
    with pytest.raises(BatchInputError, match="'scans/a' is both a file and a folder in it"):
        zip_source(make_zip({"scans/a": jpeg, "scans/a/b.jpg": jpeg}), "upload.zip", settings=settings)
    with pytest.raises(BatchInputError, match="holds 'x.jpg' twice"):
        zip_source(
            make_zip({"x.jpg": jpeg, "y.jpg": jpeg}).replace(b"y.jpg", b"x.jpg"), "upload.zip", settings=settings
        )


def test_a_path_too_long_to_record_is_skipped_with_its_reason(root: Path) -> None:
    folder = root / "deep"
    deep = folder.joinpath(*["d" * 200] * 5)  # 1,000+ characters below the folder, within the OS's limits
    deep.mkdir(parents=True)
    (deep / "scan.jpg").write_bytes(sample_jpegs(1)[0].read_bytes())
    listing = list_folder(folder)
    assert listing.images == []
    [(recorded, reason)] = listing.skipped
    assert reason == "its path is longer than 1000 characters" and len(recorded) <= 1000
    assert recorded.startswith("d" * 200)
