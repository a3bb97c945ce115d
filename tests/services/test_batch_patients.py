"""Before a batch starts: the patient modes that fit its input, and how many images each leaves without a patient."""

import io
import zipfile

from services.batch_input import list_folder
from services.batch_patients import default_mode, folder_inventory, modes_for, preview, zip_inventory
from settings import SAMPLE_DIR

JPEG = sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[0].read_bytes()


def test_a_zip_of_one_folder_of_patient_folders_is_read_as_the_batch_will_unpack_it(dicom_bytes) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export/P-1/a.dcm", dicom_bytes(patient_mrn="Müller-01"))
        archive.writestr("export/P-1/noname", dicom_bytes(patient_mrn="Müller-01"))  # DICOM by its content
        archive.writestr("export/P-2/b.jpg", JPEG)
        archive.writestr("export/P-2/notes.txt", "not a scan")
        archive.writestr("__MACOSX/export/._b.jpg", "resource fork")
    with zipfile.ZipFile(buffer) as archive:
        inventory = zip_inventory(archive, archive.infolist())
    assert inventory.images == ("P-1/a.dcm", "P-1/noname", "P-2/b.jpg")
    assert inventory.dicom_ids == {"P-1/a.dcm": "Müller-01", "P-1/noname": "Müller-01"}
    assert default_mode(inventory) == "dicom"
    by_header = preview(inventory, "dicom", None)
    assert (by_header.without_patient, by_header.patients, by_header.refused) == (1, 1, [])
    by_folder = preview(inventory, "folder", None)
    assert (by_folder.without_patient, by_folder.patients) == (0, 2)


def test_a_folder_without_dicom_is_not_offered_the_header_mode(tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(JPEG)
    inventory = folder_inventory(list_folder(tmp_path))
    assert "dicom" not in modes_for(inventory) and default_mode(inventory) == "none"
    assert preview(inventory, "none", None).without_patient == 1
    assert preview(inventory, "single", " mrn-4711 ").patients == 1


def test_a_damaged_dicom_header_reads_as_no_patient_id_instead_of_failing_the_page(tmp_path) -> None:
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    outcome = preview(folder_inventory(list_folder(tmp_path)), "dicom", None)
    assert (outcome.images, outcome.without_patient, outcome.unknown, outcome.refused) == (1, 1, 0, [])
