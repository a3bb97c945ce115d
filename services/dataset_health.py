"""The dataset health report of a training folder: allowed folders only, cached by the folders' fingerprints.

The report of a large folder takes a minute (every image decoded and hashed, every pair compared); opening
it again reads the files' bytes to fingerprint them and loads the stored JSON. A changed file, a renamed one
or another test folder is another fingerprint, so a stale report is never shown.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from models.data.folders import allowed_folder
from models.data.health import REPORT_VERSION, HealthReport, folder_fingerprint, health_report
from services.auth import Actor
from settings import Settings

CACHE_FOLDER = "dataset-health"


def cache_path(root: Path, test: Path | None, *, settings: Settings) -> Path:
    """Where the report of these folders, as they are now, is stored."""
    parts = [str(REPORT_VERSION), folder_fingerprint(root), folder_fingerprint(test) if test else "-"]
    key = hashlib.sha256(":".join(parts).encode()).hexdigest()
    return Path(settings.artifact_dir) / CACHE_FOLDER / f"{key}.json"


def _read(path: Path) -> HealthReport | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet, or half-written by a process that died: computed again
    return HealthReport.from_dict(data) if data.get("version") == REPORT_VERSION else None


def _write(path: Path, report: HealthReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(report.to_dict()))
    partial.replace(path)  # atomic: a reader sees the old file or the whole new one


def dataset_health(data_dir: str, test_dir: str | None, *, settings: Settings) -> HealthReport:
    """The report of an allowed training folder (and test folder); DatasetError with a message if refused."""
    roots = list(settings.allowed_data_roots)
    root = allowed_folder(data_dir, roots)
    test = allowed_folder(test_dir, roots) if test_dir else None
    path = cache_path(root, test, settings=settings)
    if (cached := _read(path)) is not None:
        return cached
    report = health_report(root, test=test)
    _write(path, report)
    return report


def health_record(report: HealthReport, *, acknowledged_by: Actor | None) -> dict[str, Any]:
    """What a run keeps of the report it was started on: the folders' fingerprints, warnings, who accepted them."""
    return {
        "fingerprint": report.fingerprint,
        "test_fingerprint": report.test["fingerprint"] if report.test else None,
        "warnings": report.warnings,
        "acknowledged_by": acknowledged_by.username if acknowledged_by and report.warnings else None,
    }
