"""The query functions behave the same on SQLite and on PostgreSQL."""

from datetime import timedelta

import pytest

from db.jobs import (
    create_job,
    finish_job,
    get_job,
    is_cancel_requested,
    mark_running,
    recent_jobs,
    request_cancel,
    set_progress,
    settle_stale_jobs,
)
from db.runs import (
    activate_model_version,
    create_run,
    get_active_model,
    get_run,
    list_model_versions,
    register_model_version,
)
from db.scans import get_or_create_patient, get_or_create_scan, upsert_prediction
from db.schema import utcnow
from db.session import session_scope
from db.stats import table_counts
from services.model_files import file_sha256, register_default_models


def _new_job(kind: str = "selfcheck") -> int:
    with session_scope() as session:
        return create_job(session=session, kind=kind, params={"folder": "x"}).id


def test_job_lifecycle_records_worker_progress_and_result(any_db_url):
    job_id = _new_job()
    with session_scope() as session:
        assert mark_running(session=session, job_id=job_id, worker="w@host") is not None
        set_progress(session=session, job_id=job_id, current=2, total=4, message="half way")
    with session_scope() as session:
        finish_job(session=session, job_id=job_id, status="succeeded", result={"checks": 4})
    with session_scope() as session:
        job = get_job(session=session, job_id=job_id)
        assert (job.status, job.worker, job.attempts) == ("succeeded", "w@host", 1)
        assert (job.progress_current, job.progress_total, job.result) == (4, 4, {"checks": 4})


def test_finished_job_cannot_be_claimed_again(any_db_url):
    job_id = _new_job()
    with session_scope() as session:
        finish_job(session=session, job_id=job_id, status="failed", error="ValueError: no")
    with session_scope() as session:
        assert mark_running(session=session, job_id=job_id, worker="w@host") is None


def test_cancel_of_queued_job_is_immediate_and_of_running_job_is_a_flag(any_db_url):
    queued, running = _new_job(), _new_job()
    with session_scope() as session:
        mark_running(session=session, job_id=running, worker="w@host")
    with session_scope() as session:
        request_cancel(session=session, job_id=queued)
        request_cancel(session=session, job_id=running)
    with session_scope() as session:
        assert get_job(session=session, job_id=queued).status == "cancelled"
        assert get_job(session=session, job_id=running).status == "running"
        assert is_cancel_requested(session=session, job_id=running)


def test_stale_running_job_is_settled_failed_with_its_run(any_db_url):
    stale, fresh = _new_job("train"), _new_job()
    with session_scope() as session:
        run_id = create_run(
            session=session, framework="torch", preset="tiny", params={}, dataset_path="/data", job_id=stale
        ).id
        for job_id in (stale, fresh):
            mark_running(session=session, job_id=job_id, worker="w@host")
        get_job(session=session, job_id=stale).heartbeat_at = utcnow() - timedelta(hours=1)
    with session_scope() as session:
        assert settle_stale_jobs(session=session, older_than_s=300) == 1
    with session_scope() as session:
        job = get_job(session=session, job_id=stale)
        assert job.status == "failed" and "stopped responding" in job.error
        assert get_job(session=session, job_id=fresh).status == "running"
        assert get_run(session=session, run_id=run_id).status == "failed"


def test_recent_jobs_lists_newest_first(any_db_url):
    ids = [_new_job(), _new_job("batch"), _new_job()]
    with session_scope() as session:
        assert [job.id for job in recent_jobs(session=session)] == ids[::-1]
        assert [job.id for job in recent_jobs(session=session, kind="batch")] == [ids[1]]


def test_one_active_model_per_framework(any_db_url):
    with session_scope() as session:
        first = register_model_version(
            session=session, framework="torch", name="a", artifact_path="/a.pth", sha256="a" * 64, activate=True
        )
        second = register_model_version(
            session=session, framework="torch", name="b", artifact_path="/b.pth", sha256="b" * 64
        )
        keras = register_model_version(
            session=session, framework="keras", name="k", artifact_path="/k.keras", sha256="c" * 64, activate=True
        )
        activate_model_version(session=session, version_id=second.id)
    with session_scope() as session:
        assert get_active_model(session=session, framework="torch").id == second.id
        assert get_active_model(session=session, framework="keras").id == keras.id
        assert first.id != second.id


def test_same_image_for_same_patient_is_one_scan_with_one_prediction_per_model(any_db_url):
    fields = dict(file_path="/s/ab.png", original_name="a.png", source="upload", width=4, height=4, image_format="PNG")
    with session_scope() as session:
        patient = get_or_create_patient(session=session, mrn="MRN-1")
        version = register_model_version(
            session=session, framework="torch", name="a", artifact_path="/a.pth", sha256="a" * 64
        )
        scan, created = get_or_create_scan(session=session, patient_pk=patient.id, sha256="ab" * 32, **fields)
        again, created_again = get_or_create_scan(session=session, patient_pk=patient.id, sha256="ab" * 32, **fields)
        prediction = dict(
            scan_id=scan.id,
            model_version_id=version.id,
            label="glioma",
            confidence=0.9,
            needs_review=False,
            probabilities={"glioma": 0.9, "meningioma": 0.05, "notumor": 0.03, "pituitary": 0.02},
            source="upload",
        )
        _, first = upsert_prediction(session=session, **prediction)
        _, second = upsert_prediction(session=session, **prediction)
    assert (created, created_again, again.id, first, second) == (True, False, scan.id, True, False)
    with session_scope() as session:
        assert table_counts(session=session) == {"patients": 1, "scans": 1, "predictions": 1, "runs": 0}


def test_shipped_models_are_registered_once_and_activated(any_db_url, tmp_path):
    weights = tmp_path / "cnn_default.pth"
    weights.write_bytes(b"weights")
    files = {"torch": weights, "keras": tmp_path / "absent.keras"}
    with session_scope() as session:
        registered = register_default_models(session=session, files=files)
    with session_scope() as session:
        again = register_default_models(session=session, files=files)
        active = get_active_model(session=session, framework="torch")
        assert get_active_model(session=session, framework="keras") is None
    assert [version.framework for version in registered] == ["torch"] and again == []
    assert (active.name, active.sha256, active.artifact_path) == ("cnn_default", file_sha256(weights), str(weights))


def test_shipped_model_brings_its_run_record(any_db_url, tmp_path):
    import json

    weights = tmp_path / "cnn_default.pth"
    weights.write_bytes(b"weights")
    epoch = {
        "epoch": 1,
        "train_loss": 0.9,
        "train_acc": 0.6,
        "val_loss": 0.8,
        "val_acc": 0.7,
        "val_precision": 0.7,
        "val_recall": 0.7,
        "val_f1": 0.7,
        "lr": 1e-3,
        "duration_s": 10.0,
        "images_per_s": 50.0,
    }
    summary = {
        "framework": "torch",
        "preset": "improved",
        "config": {"data_dir": "/data/Training"},
        "fingerprint": "f" * 64,
        "epochs": [epoch],
        "metrics": {"val": {"accuracy": 0.7}},
    }
    (tmp_path / "cnn_default.pth.json").write_text(json.dumps({"run": summary}))
    with session_scope() as session:
        register_default_models(session=session, files={"torch": weights})
    with session_scope() as session:
        active = get_active_model(session=session, framework="torch")
        run = active.run
        assert (run.status, run.preset, run.dataset_fingerprint) == ("succeeded", "improved", "f" * 64)
        assert run.metrics["val"]["accuracy"] == 0.7 and [e.val_acc for e in run.epochs] == [0.7]


def test_finish_job_rejects_a_status_that_is_not_final(any_db_url):
    job_id = _new_job()
    with session_scope() as session, pytest.raises(ValueError):
        finish_job(session=session, job_id=job_id, status="running")


def test_new_shipped_defaults_become_active_and_the_old_ones_stay_for_rollback(any_db_url, tmp_path):
    weights, archive = tmp_path / "cnn_default.pth", tmp_path / "archive"
    weights.write_bytes(b"first release")
    with session_scope() as session:
        [first] = register_default_models(session=session, files={"torch": weights}, archive=archive)
        first_id = first.id
    # The next release replaces the file and archives the old one.
    archive.mkdir()
    (archive / "cnn_2026-11.pth").write_bytes(weights.read_bytes())
    weights.write_bytes(b"second release")
    with session_scope() as session:
        [second] = register_default_models(session=session, files={"torch": weights}, archive=archive)
        assert register_default_models(session=session, files={"torch": weights}, archive=archive) == []
        versions = {v.id: v for v in list_model_versions(session=session, framework="torch")}
        active = get_active_model(session=session, framework="torch")
        assert active.id == second.id and active.sha256 == file_sha256(weights)
        old = versions[first_id]
        assert not old.is_active and old.artifact_path == str(archive / "cnn_2026-11.pth")
        assert file_sha256(old.artifact_path) == old.sha256
