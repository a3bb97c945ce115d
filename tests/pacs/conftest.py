"""Fixtures of the DICOM tests: the shipped models registered, series written from the sample images, and
helpers that wait for a series to be answered."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from db.schema import DicomSeries
from db.series import series_with_uid
from db.session import session_scope
from scripts.dicom_peers import DCMTK
from scripts.make_series import series_files
from settings import SAMPLE_DIR
from tests.skip import require_tools


@pytest.fixture(scope="module")
def shipped_models(module_db_url: str) -> list[int]:
    """The shipped models registered and active in the module's database, their ONNX exports made (as start-up
    makes them), so a worker only loads them."""
    from services.model_files import register_default_models
    from services.predictors import prepare_export

    with session_scope() as session:
        versions = register_default_models(session=session)
        files = [(v.id, v.framework, v.artifact_path, v.sha256) for v in versions]
    for _, framework, path, sha256 in files:
        prepare_export(framework, path, sha256)
    return [version_id for version_id, *_ in files]


@pytest.fixture(scope="session")
def dcmtk() -> None:
    require_tools(*DCMTK)


def sample_slices(**per_class: int) -> list[Path]:
    """The first n sample images of each class named, in the order named (e.g. notumor=14, pituitary=6)."""
    return [path for cls, n in per_class.items() for path in sorted((SAMPLE_DIR / cls).glob("*.jpg"))[:n]]


@pytest.fixture
def write_series(tmp_path: Path) -> Callable[..., list[Path]]:
    """write_series(images, **series_files options) -> the instance files, one per slice, in a fresh folder."""

    def write(images: list[Path], **options: object) -> list[Path]:
        folder = tmp_path / f"series-{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        paths = []
        for number, data in enumerate(series_files(images, **options), start=1):  # type: ignore[arg-type]
            path = folder / f"{number:04d}.dcm"
            path.write_bytes(data)
            paths.append(path)
        return paths

    return write


def wait_for_series(
    series_uid: str, statuses: tuple[str, ...] = ("answered", "failed"), timeout: float = 180.0
) -> DicomSeries:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            series = series_with_uid(session=session, series_uid=series_uid)
            if series is not None and series.status in statuses:
                session.expunge(series)
                return series
        if time.monotonic() > deadline:
            state = "not received" if series is None else series.status
            raise AssertionError(f"series {series_uid} not in {statuses} after {timeout:.0f}s: {state}")
        time.sleep(0.3)
