"""The dataset health service: allowed folders only, a report stored by its folders' fingerprints, kept on a run
in the transaction that queues it."""

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from db import runs
from db.jobs import recent_jobs
from db.schema import TrainingRun
from db.session import session_scope
from models.data.dataset import DatasetError
from models.training.config import make_config
from services.dataset_health import cache_path, dataset_health, health_record
from settings import SAMPLE_DIR, Settings
from tests.users import make_actor
from worker.submit import cancel_job, submit_training


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(allowed_data_roots=[tmp_path / "data"], artifact_dir=tmp_path / "artifacts")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "train"
    shutil.copytree(SAMPLE_DIR, root)
    return root


def test_a_folder_outside_the_allowed_roots_is_refused(settings: Settings, folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(SAMPLE_DIR, outside)
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        dataset_health(str(outside), None, settings=settings)
    with pytest.raises(DatasetError, match="outside the allowed data folders"):
        dataset_health(str(folder), str(outside), settings=settings)
    assert not (settings.artifact_dir / "dataset-health").exists()


def test_a_second_open_reads_the_stored_report(settings: Settings, folder: Path) -> None:
    first = dataset_health(str(folder), None, settings=settings)
    stored = cache_path(folder, None, settings=settings)
    assert json.loads(stored.read_text())["per_class"] == first.per_class
    # What is read back is the stored file, not a new computation: a mark put in it comes back.
    stored.write_text(json.dumps(json.loads(stored.read_text()) | {"root": "marked"}))
    assert dataset_health(str(folder), None, settings=settings).root == "marked"


def test_a_changed_folder_or_another_test_folder_is_reported_afresh(settings: Settings, folder: Path) -> None:
    before = dataset_health(str(folder), None, settings=settings)
    extra = next((folder / "notumor").glob("*.jpg"))
    shutil.copy(extra, folder / "glioma" / "moved-in.jpg")
    after = dataset_health(str(folder), None, settings=settings)
    assert after.per_class["glioma"] == before.per_class["glioma"] + 1
    assert after.duplicates["groups_with_conflicting_labels"] == 1

    test = settings.allowed_data_roots[0] / "test"
    (test / "notumor").mkdir(parents=True)
    shutil.copy(extra, test / "notumor" / "again.jpg")
    with_test = dataset_health(str(folder), str(test), settings=settings)
    assert with_test.test is not None and with_test.test["per_class"]["notumor"] == {"images": 1, "leaked": 1}
    assert with_test.needs_acknowledgment
    assert len(list((settings.artifact_dir / "dataset-health").glob("*.json"))) == 3


def test_a_stored_report_of_another_version_is_computed_again(settings: Settings, folder: Path) -> None:
    dataset_health(str(folder), None, settings=settings)
    stored = cache_path(folder, None, settings=settings)
    stored.write_text(json.dumps(json.loads(stored.read_text()) | {"version": 0, "root": "old"}))
    assert dataset_health(str(folder), None, settings=settings).root == str(folder.resolve())
    stored.write_text("{half-writ")
    assert dataset_health(str(folder), None, settings=settings).root == str(folder.resolve())


def test_the_check_and_its_acknowledgment_are_kept_with_the_run_and_its_job(
    db_url: str, settings: Settings, folder: Path
) -> None:
    test = settings.allowed_data_roots[0] / "test"
    shutil.copytree(folder, test)
    report = dataset_health(str(folder), str(test), settings=settings)
    admin = make_actor("admin")
    cfg = make_config("torch", str(folder), "report", epochs=1)
    job_id, run_id = submit_training(cfg, actor=admin, dataset_health=health_record(report, acknowledged_by=admin))
    cancel_job(job_id, actor=admin)
    with session_scope() as session:
        params = runs.get_run(session=session, run_id=run_id).params
    assert params["epochs"] == 1
    assert params["dataset_health"] == {
        "fingerprint": report.fingerprint,
        "test_fingerprint": report.test["fingerprint"],
        "warnings": report.warnings,
        "acknowledged_by": "test-admin",
    }
    assert "80 of 80 test images" in params["dataset_health"]["warnings"][0]


def test_a_run_that_cannot_be_recorded_leaves_no_job(db_url: str, folder: Path) -> None:
    cfg = make_config("torch", str(folder), "report", epochs=1)
    with pytest.raises(StatementError):  # the check is not JSON: the run's row cannot be written
        submit_training(cfg, actor=make_actor("admin"), dataset_health={"warnings": object()})
    with session_scope() as session:
        assert recent_jobs(session=session) == [] and session.scalar(select(func.count(TrainingRun.id))) == 0
