"""History entries built in memory, for tests of what renders them (charts, reports, CSV), and page text."""

from dataclasses import replace
from datetime import datetime
from typing import Any

from db.history import ScanEntry

SCAN = ScanEntry(
    scan_id=1,
    created_at=datetime(2026, 1, 2),
    study_date=None,
    original_name="a.dcm",
    file_path="/missing.png",
    sha256="1" * 64,
    source="upload",
    job_id=None,
    width=8,
    height=8,
    image_format="PNG",
    modality="MR",
    series_description=None,
    note=None,
    file_shared=False,
)


def scan_entry(**fields: Any) -> ScanEntry:
    """A stored scan as the History page reads it, with `fields` changed."""
    return replace(SCAN, **fields)


def shown(markdown: str) -> str:
    """What a person reads of markdown whose typed parts were escaped (ui.text.literal)."""
    return markdown.replace("\\", "")
