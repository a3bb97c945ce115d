"""Whose scans a batch's files would become, said before the batch starts: the patient mode that fits the input,
and how many images each mode leaves without a patient or with an id against the rule.

Reads only each DICOM file's first bytes (its header up to the PatientID), never its pixels. Light imports only:
the Batch page imports this module.
"""

import io
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from db.schema import CLASSES, mrn_key
from services.batch_input import (
    DICOM_MAGIC,
    DICOM_MAGIC_OFFSET,
    IMAGE_SUFFIXES,
    PATIENT_MODES,
    BatchInputError,
    Listing,
    check_patient_mode,
    dicom_patient,
    folder_patient,
)

DICOM_SUFFIXES = {".dcm", ".dicom"}
# A header holds the PatientID within its first few kilobytes; a file that hides it further is read at Start.
HEADER_BYTES = 64 * 1024
UNREAD = "the header could not be read before the batch starts"


@dataclass(frozen=True)
class Inventory:
    """The images a batch would predict, and for each DICOM file among them the PatientID its header holds."""

    images: tuple[str, ...]
    dicom_ids: dict[str, str | None] = field(default_factory=dict)  # None: no PatientID in the header
    unread: frozenset[str] = frozenset()  # DICOM files whose header could not be read from their first bytes

    @property
    def has_dicom(self) -> bool:
        return bool(self.dicom_ids) or bool(self.unread)


@dataclass(frozen=True)
class PatientPreview:
    """What a patient mode would make of an input's images."""

    images: int
    without_patient: int  # saved without a patient (they wait in the review queue for one)
    patients: int  # distinct patient ids the others would go to
    refused: list[tuple[str, str]]  # (image, why): its patient id breaks the rule, so it would fail
    unknown: int = 0  # DICOM files whose PatientID is read only when the batch runs


def modes_for(inventory: Inventory) -> dict[str, str]:
    """The patient modes that make sense for this input: "From the DICOM header" only when it holds DICOM files."""
    return {mode: text for mode, text in PATIENT_MODES.items() if mode != "dicom" or inventory.has_dicom}


def default_mode(inventory: Inventory) -> str:
    return "dicom" if inventory.has_dicom else "none"


def preview(inventory: Inventory, mode: str, single_mrn: str | None) -> PatientPreview:
    """How the images would be assigned in `mode`; raises BatchInputError for an unknown mode or a bad single id."""
    single = check_patient_mode(mode, single_mrn)
    ids: set[str] = set()
    without, unknown = 0, 0
    refused: list[tuple[str, str]] = []
    for path in inventory.images:
        try:
            if mode == "single":
                mrn = single
            elif mode == "folder":
                mrn, _ = folder_patient(path)
            elif mode == "dicom":
                if path in inventory.unread:
                    unknown += 1
                    continue
                mrn, _ = dicom_patient(inventory.dicom_ids.get(path))
            else:
                mrn = None
        except BatchInputError as exc:
            refused.append((path, str(exc)))
            continue
        if mrn is None:
            without += 1
        else:
            ids.add(mrn_key(mrn))
    return PatientPreview(len(inventory.images), without, len(ids), refused, unknown)


def class_folders_as_patients(inventory: Inventory) -> bool:
    """Whether "folder" mode would take class folders (glioma/, notumor/...) for patients."""
    return any(
        PurePosixPath(p).parts[0].lower() in CLASSES for p in inventory.images if len(PurePosixPath(p).parts) > 1
    )


def header_patient_id(head: bytes) -> str | None:
    """The PatientID in the first bytes of a DICOM file, as the full read gives it (character set applied)."""
    import pydicom

    from models.data.imaging import header_value

    ds = pydicom.dcmread(
        io.BytesIO(head), force=True, stop_before_pixels=True, specific_tags=["SpecificCharacterSet", "PatientID"]
    )
    return header_value(ds, "PatientID") or None


def _inventory(images: Iterable[str], head: Callable[[str], bytes]) -> Inventory:
    ids: dict[str, str | None] = {}
    unread: set[str] = set()
    listed = tuple(images)
    for path in listed:
        if not _maybe_dicom(path):
            continue
        try:
            ids[path] = header_patient_id(head(path))
        except Exception:  # any damage in untrusted bytes: the batch itself says why when it reads the file
            unread.add(path)
    return Inventory(images=listed, dicom_ids=ids, unread=frozenset(unread))


def _suffix(path: str) -> str:
    return PurePosixPath(path).suffix.lower()


def _maybe_dicom(path: str) -> bool:
    return _suffix(path) in DICOM_SUFFIXES or not _suffix(path)


def folder_inventory(listing: Listing) -> Inventory:
    """The inventory of a listed server folder."""

    def head(path: str) -> bytes:
        try:
            with (listing.root / path).open("rb") as fh:
                return fh.read(HEADER_BYTES)
        except OSError:
            return b""

    return _inventory(listing.images, head)


def zip_inventory(archive: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> Inventory:
    """The inventory of an uploaded zip's checked entries, with the paths the batch will see once it is unpacked
    (a lone top folder of folders stepped into, as services.batch_input.unwrap does)."""
    entries = {}
    for info in files:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        entries["/".join(parts)] = info

    def head(path: str) -> bytes:
        try:
            with archive.open(entries[path]) as fh:
                return fh.read(HEADER_BYTES)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
            return b""

    images = [p for p in sorted(entries) if _suffix(p) in IMAGE_SUFFIXES or (not _suffix(p) and _magic(head(p)))]
    inventory = _inventory(images, head)
    strip = _lone_top_folder(list(entries))
    if not strip:
        return inventory
    cut = len(strip) + 1
    return Inventory(
        images=tuple(p[cut:] for p in inventory.images),
        dicom_ids={p[cut:]: mrn for p, mrn in inventory.dicom_ids.items()},
        unread=frozenset(p[cut:] for p in inventory.unread),
    )


def _magic(head: bytes) -> bool:
    return head[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC


def _lone_top_folder(paths: list[str]) -> str | None:
    parts = [PurePosixPath(p).parts for p in paths]
    tops = {p[0] for p in parts}
    if len(tops) != 1 or any(len(p) < 3 for p in parts):
        return None
    top = next(iter(tops))
    return None if top.lower() in CLASSES else top
