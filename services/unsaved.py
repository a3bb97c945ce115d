"""Diagnose results not saved to a record yet, kept on the server for their user, so that a page reload or a lost
connection does not lose them: each upload as the record would store it (its file without metadata, and what its
DICOM header said), and which refused images the person asked to see anyway. The answers are made again from
these. Kept for UNSAVED_KEEP_HOURS, then removed (on the user's next visit, or by the periodic sweep).

One folder per user under ARTIFACT_DIR/unsaved/: the files by sha256, and a manifest replaced whole on each change.
"""

import hashlib
import json
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.data.files import write_whole
from models.data.imaging import ImageError, analysis_copy, decode_image
from services.auth import Actor, require_signed_in
from services.uploads import Upload
from settings import Settings, get_settings

MANIFEST = "manifest.json"
# What the manifest keeps of each upload beside its file: the decoded image's own fields, less its pixels.
KEPT_FIELDS = (
    "stored_suffix",
    "sha256",
    "width",
    "height",
    "image_format",
    "patient_mrn",
    "study_date",
    "modality",
    "series_description",
    "note",
)


@dataclass(frozen=True)
class Kept:
    uploads: list[Upload]
    shown_anyway: set[str]  # sha256s of refused images whose answer was asked for
    kept_at: datetime  # UTC
    unreadable: int = 0  # entries whose file was gone or damaged, left out


def _root(settings: Settings) -> Path:
    return Path(settings.artifact_dir) / "unsaved"


def _folder(actor: Actor, settings: Settings) -> Path:
    return _root(settings) / str(actor.user_id)


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: beside the target, then renamed over it."""
    write_whole(path, lambda handle: handle.write(data))


def keep(actor: Actor | None, uploads: Sequence[Upload], *, shown_anyway: Collection[str] = ()) -> None:
    """Keep these uploads as `actor`'s unsaved results, in place of whatever was kept before; none: discard."""
    actor = require_signed_in(actor, "keep unsaved results")
    if not uploads:
        discard(actor)
        return
    settings = get_settings()
    folder = _folder(actor, settings)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for upload in uploads:
        decoded = upload.decoded
        file = folder / f"{decoded.sha256}{decoded.stored_suffix}"
        if not file.is_file():
            _write(file, decoded.stored_bytes)
        entries.append({"name": upload.name, **{k: getattr(decoded, k) for k in KEPT_FIELDS}})
    anyway = sorted(set(shown_anyway) & {e["sha256"] for e in entries})
    manifest = {"kept_at": time.time(), "uploads": entries, "shown_anyway": anyway}
    _write(folder / MANIFEST, json.dumps(manifest).encode())
    wanted = {f"{e['sha256']}{e['stored_suffix']}" for e in entries} | {MANIFEST}
    for path in folder.iterdir():
        if path.name not in wanted and not path.name.startswith(".tmp-"):
            path.unlink(missing_ok=True)


def _expired(kept_at: float, settings: Settings, now: float) -> bool:
    return now - kept_at > settings.unsaved_keep_hours * 3600


def restore(actor: Actor | None) -> Kept | None:
    """`actor`'s unsaved results, decoded again; None when nothing is kept (or what was kept has expired)."""
    actor = require_signed_in(actor, "restore unsaved results")
    settings = get_settings()
    folder = _folder(actor, settings)
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if _expired(float(manifest.get("kept_at", 0)), settings, time.time()):
        discard(actor)
        return None
    uploads, unreadable = [], 0
    for entry in manifest.get("uploads", []):
        upload = _upload(folder, entry, settings)
        if upload is None:
            unreadable += 1
        else:
            uploads.append(upload)
    if not uploads and not unreadable:
        return None
    kept_at = datetime.fromtimestamp(float(manifest["kept_at"]), UTC)
    return Kept(uploads, set(manifest.get("shown_anyway", [])), kept_at, unreadable)


def _upload(folder: Path, entry: dict[str, Any], settings: Settings) -> Upload | None:
    """An upload as it was analysed, from its kept file; None when the file is gone or no longer its sha256."""
    try:
        data = (folder / f"{entry['sha256']}{entry['stored_suffix']}").read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return None
        pixels = decode_image(
            data,
            f"{entry['name']}{entry['stored_suffix']}",
            max_bytes=max(len(data), 1),
            max_pixels=settings.max_image_pixels,
        )
    except (OSError, KeyError, ImageError):
        return None
    fields = {k: entry.get(k) for k in KEPT_FIELDS}
    return Upload(entry["name"], analysis_copy(replace(pixels, stored_bytes=data, **fields)))


def discard(actor: Actor | None) -> None:
    """Forget `actor`'s unsaved results."""
    actor = require_signed_in(actor, "discard unsaved results")
    shutil.rmtree(_folder(actor, get_settings()), ignore_errors=True)


def sweep_expired(settings: Settings | None = None, *, now: float | None = None) -> int:
    """Remove every user's unsaved results past UNSAVED_KEEP_HOURS (and folders left without a manifest);
    returns how many folders went."""
    settings = settings or get_settings()
    now = time.time() if now is None else now
    root = _root(settings)
    removed = 0
    for folder in root.iterdir() if root.is_dir() else ():
        try:
            kept_at = float(json.loads((folder / MANIFEST).read_text())["kept_at"])
        except (OSError, ValueError, KeyError):
            kept_at = folder.stat().st_mtime  # a manifest never written: judged by the folder's own age
        if _expired(kept_at, settings, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
