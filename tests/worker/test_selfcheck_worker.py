"""A real worker process, over real Redis and a real SQLite file, runs self-check jobs end to end."""

from pathlib import Path

import pytest

from db.jobs import get_job
from db.runs import register_model_version
from db.schema import ModelVersion
from db.session import session_scope
from settings import get_settings
from tests.users import make_actor
from worker.submit import submit_job, worker_status

pytestmark = pytest.mark.slow


@pytest.fixture
def broken_models(module_db_url: str, tmp_path: Path):
    """An active torch model whose file is gone and an active keras model whose file changed."""
    changed = tmp_path / "changed.keras"
    changed.write_bytes(b"not what was registered")
    with session_scope() as session:
        versions = [
            register_model_version(
                session=session,
                framework="torch",
                name="gone",
                artifact_path=tmp_path / "gone.pth",
                sha256="0" * 64,
                activate=True,
            ),
            register_model_version(
                session=session,
                framework="keras",
                name="changed",
                artifact_path=changed,
                sha256="1" * 64,
                activate=True,
            ),
        ]
    yield {"missing": tmp_path / "gone.pth", "changed": changed}
    with session_scope() as session:
        for version in versions:
            session.delete(session.get(ModelVersion, version.id))


def test_worker_is_listed_as_online(worker):
    status = worker_status()
    assert status["redis_ok"] and worker.name in status["workers"]


def test_selfcheck_goes_from_queued_through_running_to_succeeded(worker, wait_for_job):
    job_id = submit_job("selfcheck", {}, actor=make_actor())
    job = wait_for_job(job_id)
    assert job.status == "succeeded", job.error
    # No model is active: the database and the two folders are the three checks, one step each.
    settings = get_settings()
    assert list(job.result["checks"]) == [
        "database is writable",
        f"artifact folder {settings.artifact_dir} is writable",
        f"upload folder {settings.upload_dir} is writable",
    ]
    assert job.progress_current == job.progress_total == 3
    assert job.celery_id and job.worker == worker.name and job.attempts == 1
    assert job.created_at <= job.started_at <= job.finished_at
    assert set(job.result["checks"].values()) == {"ok"}
    assert job.message == f"all {job.progress_total} checks passed"


def test_selfcheck_fails_naming_each_broken_model_file(worker, broken_models, wait_for_job):
    job_id = submit_job("selfcheck", {}, actor=make_actor())
    job = wait_for_job(job_id)
    assert job.status == "failed"
    assert job.error.startswith("2 of 5 checks failed.")
    assert f"its file is missing: {broken_models['missing']}" in job.error
    assert f"its file changed after it was registered: {broken_models['changed']}" in job.error
    with session_scope() as session:
        assert get_job(session=session, job_id=job_id).progress_current == 5
