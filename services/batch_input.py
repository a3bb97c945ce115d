"""What a batch job may read: a server folder under the allowed roots, or an uploaded zip unpacked safely.

Pages call these before submitting (so a bad folder or zip is refused on the spot) and the job calls them
again when it runs (the folder may have changed in between). Light imports only: pages import this module.
"""

import errno
import hashlib
import io
import lzma
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from db.scans import validate_mrn
from db.schema import CLASSES
from db.storage import is_disk_full, storage_full
from models.data.dataset import DatasetError
from models.data.folders import allowed_folder
from settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom"}
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"
PATIENT_MODES = {
    "dicom": "From the DICOM header (PatientID)",
    "folder": "From the first folder level (<patient id>/<scan>)",
    "single": "One patient for the whole batch",
    "none": "No patient",
}
# Scans barely compress (JPEG, PNG) or compress a few times (DICOM); a much higher ratio is a zip bomb.
MAX_ZIP_RATIO = 100
# A file's path inside a batch folder is recorded with its result (batch_items.rel_path holds 1,024 characters).
MAX_PATH_CHARS = 1000
# Linux refuses a file or folder name over 255 bytes (NAME_MAX); a zip entry's whole path is held to
# MAX_PATH_CHARS bytes, which also keeps it, under the upload folder, within PATH_MAX (4,096 bytes).
MAX_NAME_BYTES = 255
# Below this size an entry's ratio says nothing (a few bytes of zeros compress a thousandfold).
RATIO_CHECK_MIN_BYTES = 1 << 20
# The unpacked zip may be this many times the allowed zip size.
MAX_ZIP_EXPANSION = 4
COPY_CHUNK = 1 << 20


class BatchInputError(ValueError):
    """A folder, zip or option a batch cannot use; the message is shown to a person as-is."""


@dataclass
class Listing:
    """The files of a batch folder: the images to predict and, with a reason each, the files left out."""

    root: Path
    images: list[str] = field(default_factory=list)  # paths relative to root, POSIX style, sorted
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)


def resolve_folder(text: str, *, roots: list[Path]) -> Path:
    """The real folder a typed path names, if it lies under one of `roots` once links are followed."""
    if not text.strip():
        raise BatchInputError("Enter the full path of a folder on the server.")
    try:
        return allowed_folder(text, roots)
    except DatasetError as exc:
        raise BatchInputError(f"{exc}.{_escape(text, roots)}") from exc


def _escape(text: str, roots: list[Path]) -> str:
    """How a path that looks inside the allowed folders gets out of them: by '..' or through a link."""
    path = Path(text.strip())
    if not path.is_absolute():
        return ""
    real_roots = [r.resolve() for r in roots]
    if any(path.resolve().is_relative_to(r) for r in real_roots):
        return ""
    if ".." in path.parts:
        return " The path climbs out of them with '..'."
    lexical = Path(os.path.normpath(path))
    if any(lexical.is_relative_to(r) for r in [*roots, *real_roots]):
        return f" A symbolic link on the way leads outside them, to {path.resolve()}."
    return ""


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """An open descriptor of `path` and its status, or OSError. Opened without waiting: a named pipe put where a
    listed file was would otherwise block the open until something writes to it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    return fd, os.fstat(fd)


def _looks_like_dicom(path: Path) -> bool:
    try:
        fd, status = _open_regular(path)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)) if stat.S_ISREG(status.st_mode) else b""
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def read_listed_file(root: Path, rel_path: str, *, max_bytes: int) -> bytes:
    """A listed file's bytes, read only while it is still a regular file inside `root` and at most `max_bytes`.

    Between the listing and this read the file may have been replaced: by a named pipe, a device or a socket
    (refused without waiting on it), by a link leading out of the folder, or by a larger file. Raises
    BatchInputError with the reason, or OSError.
    """
    root = root.resolve()
    target = (root / rel_path).resolve()
    if not target.is_relative_to(root):
        raise BatchInputError(f"it now leads outside the folder (to {target}); not read.")
    try:
        fd, status = _open_regular(target)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # made a link after the path was resolved
            raise BatchInputError("it was replaced by a link while the job ran; not read.") from exc
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(status.st_mode):
            raise BatchInputError(
                "it is no longer a regular file (a pipe, socket or device was put in its place after the folder "
                "was listed); not read."
            )
        if status.st_size > max_bytes:
            raise BatchInputError(
                f"the file is {status.st_size / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:.0f} MB."
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BatchInputError(f"the file grew past the limit of {max_bytes / 2**20:.0f} MB while it was read.")
    return data


def _skip_reason(path: Path, rel: PurePosixPath, root: Path) -> str | None:
    """Why a file is not predicted, or None when it is an image to predict."""
    if len(str(rel)) > MAX_PATH_CHARS:
        return f"its path is longer than {MAX_PATH_CHARS} characters"
    if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
        return "hidden or system file"
    if not path.is_symlink() and not path.is_file():
        # Opening a named pipe waits for a writer for ever; a device or socket is no scan either.
        return "not a regular file (a pipe, socket or device)"
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            return f"symbolic link leading outside the folder (to {target})"
        if not target.is_file():
            return "symbolic link to something that is not a file"
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    if not suffix and _looks_like_dicom(path):
        return None
    return f"not a JPEG, PNG or DICOM file (by its name{'' if suffix else ' and content'})"


def _recordable(rel: str) -> str:
    """A path short enough to record: a long one keeps its start and a digest of the whole, so it stays unique."""
    if len(rel) <= MAX_PATH_CHARS:
        return rel
    return rel[: MAX_PATH_CHARS - 18] + "…" + hashlib.sha256(rel.encode()).hexdigest()[:16]


def list_folder(root: Path) -> Listing:
    """Every file under root, recursively, split into images and skipped files; links are not followed."""
    root = root.resolve()
    listing = Listing(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                rel = (here / name).relative_to(root).as_posix()
                listing.skipped.append((rel + "/", "symbolic link to a folder, not followed"))
        for name in filenames:
            path = here / name
            rel = PurePosixPath(path.relative_to(root).as_posix())
            reason = _skip_reason(path, rel, root)
            if reason is None:
                listing.images.append(str(rel))
            else:
                listing.skipped.append((_recordable(str(rel)), reason))
    listing.images.sort()
    listing.skipped.sort()
    return listing


def true_label(rel_path: str) -> str | None:
    """The class a labelled folder gives a file: the first folder on its path named like a class."""
    for part in PurePosixPath(rel_path).parts[:-1]:
        if part.lower() in CLASSES:
            return part.lower()
    return None


def folder_patient(rel_path: str) -> tuple[str | None, str | None]:
    """(patient id, note) in "folder" mode: the first folder level names the patient.

    Raises BatchInputError when that folder's name is not a usable patient id.
    """
    parts = PurePosixPath(rel_path).parts
    if len(parts) < 2:
        return None, "not inside a patient folder: saved without a patient"
    try:
        return validate_mrn(parts[0]), None
    except ValueError as exc:
        raise BatchInputError(f"the folder name '{parts[0]}' is not a usable patient id. {exc}") from exc


def dicom_patient(patient_mrn: str | None) -> tuple[str | None, str | None]:
    """(patient id, note) in "dicom" mode. Raises BatchInputError when the header's id is not usable."""
    if not patient_mrn:
        return None, "no PatientID in the file: saved without a patient"
    try:
        return validate_mrn(patient_mrn), None
    except ValueError as exc:
        raise BatchInputError(f"the PatientID '{patient_mrn}' in the file is not a usable patient id. {exc}") from exc


def check_patient_mode(mode: str, patient_mrn: str | None) -> str | None:
    """The batch-wide patient id ("single" mode) after checking the mode; raises BatchInputError."""
    if mode not in PATIENT_MODES:
        raise BatchInputError(f"Unknown patient mode '{mode}': use one of {', '.join(PATIENT_MODES)}.")
    if mode != "single":
        return None
    try:
        return validate_mrn(patient_mrn or "")
    except ValueError as exc:
        raise BatchInputError(f"Enter the patient id for the whole batch. {exc}") from exc


def _entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """An entry's path parts; raises BatchInputError for a name that would land outside the folder."""
    name = info.filename.replace("\\", "/")
    pure = PurePosixPath(name)
    if name.startswith("/") or (pure.parts and pure.parts[0].endswith(":")):
        raise BatchInputError(f"The zip was refused: its entry '{info.filename}' has an absolute path.")
    if ".." in pure.parts:
        raise BatchInputError(f"The zip was refused: its entry '{info.filename}' uses '..' to leave the folder.")
    if len(name.encode()) > MAX_PATH_CHARS or any(len(part.encode()) > MAX_NAME_BYTES for part in pure.parts):
        shown = info.filename if len(info.filename) <= 80 else info.filename[:80] + "…"
        raise BatchInputError(
            f"The zip was refused: its entry '{shown}' has a name too long to unpack (over "
            f"{MAX_PATH_CHARS} bytes in all, or over {MAX_NAME_BYTES} in one folder or file name)."
        )
    return tuple(p for p in pure.parts if p not in ("", "."))


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def check_zip(archive: zipfile.ZipFile, *, settings: Settings) -> list[zipfile.ZipInfo]:
    """The zip's file entries, after refusing unsafe names, links, too many files and zip bombs."""
    infos = archive.infolist()
    if any(not info.filename for info in infos):
        # A nameless entry can be neither unpacked nor shown; zipfile's is_dir() even fails on it.
        raise BatchInputError("The zip was refused: one of its entries has no name.")
    files = [info for info in infos if not info.is_dir()]
    if len(files) > settings.max_zip_files:
        raise BatchInputError(
            f"The zip was refused: it holds {len(files):,} files, more than the limit of {settings.max_zip_files:,}."
        )
    total = 0
    file_paths: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    for info in infos:
        parts = _entry_parts(info)
        if info.is_dir():
            folders.add(parts)
        else:
            if parts in file_paths:
                raise BatchInputError(f"The zip was refused: it holds '{info.filename}' twice.")
            file_paths.add(parts)
        folders |= {parts[:i] for i in range(1, len(parts))}
        if _is_link(info):
            raise BatchInputError(f"The zip was refused: its entry '{info.filename}' is a symbolic link.")
        if info.flag_bits & 0x1:
            raise BatchInputError(f"The zip was refused: its entry '{info.filename}' is encrypted.")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_CHECK_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            raise BatchInputError(
                f"The zip was refused as a possible zip bomb: its entry '{info.filename}' unpacks "
                f"{ratio:,.0f} times larger than it is stored (the limit is {MAX_ZIP_RATIO})."
            )
        total += info.file_size
    clash = next((path for path in sorted(file_paths) if path in folders), None)
    if clash is not None:
        name = "/".join(clash)
        raise BatchInputError(
            f"The zip was refused: '{name}' is both a file and a folder in it, so it cannot be unpacked."
        )
    limit = settings.max_zip_mb * MAX_ZIP_EXPANSION * 2**20
    if total > limit:
        raise BatchInputError(
            f"The zip was refused as a possible zip bomb: it unpacks to {total / 2**20:,.0f} MB, "
            f"more than the limit of {limit / 2**20:,.0f} MB."
        )
    return files


def open_zip(data: bytes, *, settings: Settings) -> zipfile.ZipFile:
    """The uploaded bytes as a zip archive, after the size limit; raises BatchInputError."""
    if len(data) > settings.max_zip_mb * 2**20:
        raise BatchInputError(
            f"The zip was refused: it is {len(data) / 2**20:,.1f} MB, over the limit of {settings.max_zip_mb} MB."
        )
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, NotImplementedError) as exc:
        # NotImplementedError: an entry needs a newer zip version than zipfile reads.
        raise BatchInputError(f"The file is not a readable zip archive ({exc}).") from exc


def batches_dir(settings: Settings) -> Path:
    return settings.upload_dir / "batches"


def upload_folder(upload_id: str, *, settings: Settings) -> Path:
    """The folder an uploaded zip was unpacked into; raises BatchInputError for a malformed id."""
    try:
        key = uuid.UUID(upload_id).hex
    except (TypeError, ValueError) as exc:
        raise BatchInputError(f"'{upload_id}' is not an uploaded batch.") from exc
    folder = batches_dir(settings) / key
    if not folder.is_dir():
        raise BatchInputError("The files of this uploaded zip are gone; upload the zip again.")
    return folder


def discard_upload(upload_id: str, *, settings: Settings) -> None:
    """Delete an unpacked zip (its predicted scans are stored apart and stay)."""
    try:
        shutil.rmtree(upload_folder(upload_id, settings=settings), ignore_errors=True)
    except BatchInputError:
        pass  # already gone


def extract_zip(data: bytes, *, settings: Settings) -> str:
    """Check and unpack an uploaded zip into its own folder; returns the upload id (see `upload_folder`)."""
    upload_id = uuid.uuid4().hex
    with open_zip(data, settings=settings) as archive:
        files = check_zip(archive, settings=settings)
        batches = batches_dir(settings)
        batches.mkdir(parents=True, exist_ok=True)
        # Unpacked beside its final place and renamed at the end: a job never sees half a zip.
        staging = batches / f".tmp-{upload_id}"
        staging.mkdir()
        try:
            for info in files:
                _extract_entry(archive, info, staging)
            os.replace(staging, batches / upload_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return upload_id


def _extract_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    parts = _entry_parts(info)
    if not parts:
        return
    target = dest.joinpath(*parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise BatchInputError(f"The zip was refused: its entry '{info.filename}' would land outside the folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with archive.open(info) as source, target.open("xb") as out:
            while chunk := source.read(COPY_CHUNK):
                written += len(chunk)
                # The header's size was checked; the data must not run past it.
                if written > info.file_size:
                    raise BatchInputError(
                        f"The zip was refused: its entry '{info.filename}' holds more data than its header says."
                    )
                out.write(chunk)
    except BatchInputError:
        raise  # a ValueError too, already in words
    except FileExistsError as exc:
        raise BatchInputError(f"The zip was refused: it holds '{info.filename}' twice.") from exc
    except NotImplementedError as exc:  # zipfile's word for a compression method or zip version it cannot read
        raise BatchInputError(
            f"The zip was refused: its entry '{info.filename}' is stored in a way that cannot be unpacked here ({exc})."
        ) from exc
    except OSError as exc:
        if is_disk_full(exc):
            raise storage_full(dest.parent, "the zip was not unpacked") from exc
        raise BatchInputError(f"The zip was refused: its entry '{info.filename}' is damaged ({exc}).") from exc
    except (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
        # Damaged deflate and LZMA data surface as their decompressor's own errors, not as BadZipFile; an offset
        # pointing before the file's start or a local header's name that is not the UTF-8 it claims, as ValueError.
        raise BatchInputError(f"The zip was refused: its entry '{info.filename}' is damaged ({exc}).") from exc


def unwrap(folder: Path) -> Path:
    """The folder a zip's files are read from: a lone top folder that holds only folders (as zipping a folder
    of patient or class folders makes) is stepped into; one named like a class is kept, as it is the label."""
    entries = _visible(folder)
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        inner = entries[0]
        if inner.name.lower() not in CLASSES and all(p.is_dir() for p in _visible(inner)):
            return inner
    return folder


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]


@dataclass(frozen=True)
class BatchParams:
    """A batch job's params as its row stores them, parsed once: where its files are, whose they are, which models."""

    source: str  # "folder" (a server folder) or "zip" (an uploaded zip, unpacked under UPLOAD_DIR)
    folder: str | None = None
    upload: str | None = None  # the unpacked zip's folder (upload_folder)
    name: str | None = None  # the zip's file name, as uploaded
    patient_mode: str = "none"
    patient_mrn: str | None = None
    model_version_ids: list[int] | None = None  # None: the versions active when the job runs

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> "BatchParams":
        return cls(
            source=str(params.get("source")),
            folder=params.get("folder"),
            upload=params.get("upload"),
            name=params.get("name"),
            patient_mode=str(params.get("patient_mode", "none")),
            patient_mrn=params.get("patient_mrn", params.get("patient_id")),  # jobs queued before the rename
            model_version_ids=params.get("model_version_ids"),
        )

    def stored(self) -> dict[str, Any]:
        """As the row stores them: the fields of the job's source, whose the files are and which models."""
        where = {"folder": self.folder} if self.source == "folder" else {"upload": self.upload, "name": self.name}
        return {
            "source": self.source,
            **where,
            "patient_mode": self.patient_mode,
            "patient_mrn": self.patient_mrn,
            "model_version_ids": self.model_version_ids,
        }

    @property
    def label(self) -> str:
        """How the job's input reads on a page: the folder, or the zip's file name."""
        if self.source == "zip":
            return f"uploaded zip {self.name or ''}".strip()
        return str(self.folder or "")

    @property
    def phrase(self) -> str:
        """The input in a sentence: "the uploaded zip scans.zip", "the folder /data/x" (the path a person gave)."""
        return f"the {self.label}" if self.source == "zip" else f"the folder {self.label}"


def folder_source(text: str, *, settings: Settings) -> dict[str, str]:
    """Job parameters naming a server folder, once it is checked against the allowed roots."""
    return {"source": "folder", "folder": str(resolve_folder(text, roots=settings.allowed_data_roots))}


def zip_source(data: bytes, name: str, *, settings: Settings) -> dict[str, str]:
    """Job parameters naming an uploaded zip, once it is checked and unpacked."""
    return {"source": "zip", "upload": extract_zip(data, settings=settings), "name": name}


def source_root(params: BatchParams, *, settings: Settings) -> Path:
    """The folder a job's parameters name, checked again (it may have changed since it was submitted)."""
    if params.source == "zip":
        return unwrap(upload_folder(str(params.upload), settings=settings))
    if params.source == "folder":
        return resolve_folder(str(params.folder or ""), roots=settings.allowed_data_roots)
    raise BatchInputError(f"Unknown batch source {params.source!r}: a folder or a zip.")


def source_label(params: Mapping[str, Any]) -> str:
    """How a job's input reads on a page: the folder, or the zip's file name."""
    return BatchParams.of(params).label


def source_phrase(params: Mapping[str, Any]) -> str:
    """A job's input in a sentence: "the uploaded zip scans.zip", "the folder /data/x" (the path a person gave)."""
    return BatchParams.of(params).phrase
