"""Batch prediction through a real Celery worker, with a tiny real CNN, into a real SQLite file."""

import io
import os
import shutil
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from db.batches import batch_rows
from db.jobs import create_job, finish_job, get_job
from db.runs import register_model_version
from db.schema import BatchItem, Patient, Prediction, Scan
from db.session import session_scope
from services.batch_input import BatchInputError, folder_source, list_folder, zip_source
from settings import SAMPLE_DIR, get_settings
from tests.env import environment
from tests.users import make_actor
from worker.submit import cancel_job, requeue_job, submit_batch, submit_job


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The one folder batch jobs may read in this module; set before the worker starts, so it sees it too."""
    root = tmp_path_factory.mktemp("batch-data")
    with environment(ALLOWED_DATA_ROOTS=str(root)):
        yield root


@pytest.fixture(scope="module")
def worker(data_root: Path, module_db_url: str, start_worker: Callable):  # type: ignore[no-untyped-def]
    process = start_worker()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def cnn_version(worker, tmp_path_factory: pytest.TempPathFactory) -> int:  # type: ignore[no-untyped-def]
    """A tiny CNN really trained (one epoch, four images a class), registered as the active torch model."""
    from models.training.config import make_config
    from models.training.run import run_training
    from services.model_files import file_sha256

    out = tmp_path_factory.mktemp("tiny-cnn")
    cfg = make_config("torch", str(SAMPLE_DIR), epochs=1, batch_size=16, max_images_per_class=4, output_dir=str(out))
    path = run_training(cfg).best_path
    with session_scope() as session:
        version = register_model_version(
            session=session,
            framework="torch",
            name="tiny-cnn",
            artifact_path=path,
            sha256=file_sha256(path),
            activate=True,
        )
        return version.id


def copy_samples(dest: Path, per_class: int, *, labelled: bool) -> list[Path]:
    copied = []
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        for path in sorted((SAMPLE_DIR / cls).glob("*.jpg"))[:per_class]:
            target = dest / cls / path.name if labelled else dest / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(target)
    return copied


def run_batch(wait_for_job: Callable, folder: Path, **options: object):  # type: ignore[no-untyped-def]
    job_id = submit_batch(
        source=folder_source(str(folder), settings=get_settings()),
        **{"patient_mode": "none", **options},
        actor=make_actor(),
    )
    return wait_for_job(job_id, timeout=120)


def table_counts() -> tuple[int, int]:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Scan)), session.scalar(
            select(func.count()).select_from(Prediction)
        )


@pytest.fixture(scope="module")
def mixed_folder(data_root: Path) -> Path:
    """Eight scans for one patient, a JPEG that is cut short and a text file."""
    folder = data_root / "mixed"
    copy_samples(folder, 2, labelled=False)
    (folder / "broken.jpg").write_bytes(next(SAMPLE_DIR.rglob("*.jpg")).read_bytes()[:300])
    (folder / "notes.txt").write_text("acquired on the old scanner")
    return folder


def test_every_file_gets_a_row_and_a_broken_one_does_not_stop_the_job(cnn_version, mixed_folder, wait_for_job) -> None:
    job = run_batch(wait_for_job, mixed_folder, patient_mode="single", patient_mrn="P-100")
    assert job.status == "succeeded", job.error
    with session_scope() as session:
        rows = {row.rel_path: row for row in batch_rows(session=session, job_id=job.id)}
        patient_scans = session.scalar(
            select(func.count()).select_from(Scan).join(Patient).where(Patient.mrn == "P-100")
        )
    assert len(rows) == 10 and patient_scans == 8
    done = [row for row in rows.values() if row.status == "done"]
    assert len(done) == 8 and all(set(row.results) == {"torch"} and row.patient_mrn == "P-100" for row in done)
    assert rows["broken.jpg"].status == "error" and "truncated or damaged" in rows["broken.jpg"].error
    assert rows["notes.txt"].status == "skipped" and "not a JPEG, PNG or DICOM" in rows["notes.txt"].error
    assert job.result["done"] == 8 and job.result["error"] == 1 and job.result["skipped"] == 1
    assert job.progress_current == job.progress_total == 10


def test_a_second_run_on_the_same_folder_adds_nothing(cnn_version, mixed_folder, wait_for_job) -> None:
    first = run_batch(wait_for_job, mixed_folder, patient_mode="single", patient_mrn="P-200")
    before = table_counts()
    second = run_batch(wait_for_job, mixed_folder, patient_mode="single", patient_mrn="P-200")
    assert first.status == second.status == "succeeded"
    assert table_counts() == before
    assert second.result["done"] == 8 and second.result["new_scans"] == second.result["new_predictions"] == 0


def test_a_labelled_folder_yields_accuracy_and_a_confusion_matrix(cnn_version, data_root, wait_for_job) -> None:
    copy_samples(data_root / "labelled", 5, labelled=True)
    job = run_batch(wait_for_job, data_root / "labelled")
    assert job.status == "succeeded", job.error
    torch = job.result["metrics"]["torch"]
    assert job.result["labelled"] == 20
    assert sum(map(sum, torch["confusion_matrix"])) == 20
    assert [sum(row) for row in torch["confusion_matrix"]] == [5, 5, 5, 5]
    # The accuracy is the share of files whose answer is their folder's class, as the rows record them.
    with session_scope() as session:
        rows = batch_rows(session=session, job_id=job.id)
    right = sum(row.results["torch"]["label"] == row.rel_path.split("/")[0] for row in rows)
    assert torch["accuracy"] == pytest.approx(right / 20)
    assert right == sum(torch["confusion_matrix"][i][i] for i in range(4))


def test_patients_come_from_dicom_headers(cnn_version, data_root, wait_for_job, dicom_bytes) -> None:
    folder = data_root / "dicom"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(dicom_bytes(patient_mrn="P-0042"))
    (folder / "b.dcm").write_bytes(dicom_bytes(patient_mrn=""))
    job = run_batch(wait_for_job, folder, patient_mode="dicom")
    assert job.status == "succeeded", job.error
    with session_scope() as session:
        rows = {row.rel_path: row for row in batch_rows(session=session, job_id=job.id)}
    assert rows["a.dcm"].patient_mrn == "P-0042" and rows["a.dcm"].error is None
    assert rows["b.dcm"].status == "done" and rows["b.dcm"].patient_mrn is None
    assert "no PatientID" in rows["b.dcm"].error


def test_a_zip_is_predicted_with_patients_from_its_folders_and_then_removed(cnn_version, wait_for_job) -> None:
    first, second = sorted(SAMPLE_DIR.rglob("*.jpg"))[:2]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(first, "export/P-301/a.jpg")
        archive.write(second, "export/P-302/b.jpg")
    source = zip_source(buffer.getvalue(), "export.zip", settings=get_settings())
    job = wait_for_job(submit_batch(source=source, patient_mode="folder", actor=make_actor()), timeout=120)
    assert job.status == "succeeded", job.error
    with session_scope() as session:
        rows = batch_rows(session=session, job_id=job.id)
    assert [(r.rel_path, r.patient_mrn) for r in rows] == [("P-301/a.jpg", "P-301"), ("P-302/b.jpg", "P-302")]
    assert not (get_settings().upload_dir / "batches" / source["upload"]).exists()


def test_a_zip_with_a_parent_entry_is_refused_before_any_job(cnn_version) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../etc/evil.jpg", b"x")
    with pytest.raises(BatchInputError, match="its entry '../../etc/evil.jpg' uses '..' to leave the folder"):
        zip_source(buffer.getvalue(), "evil.zip", settings=get_settings())


def test_folders_outside_the_roots_are_refused_by_the_page_and_by_the_worker(
    cnn_version, data_root, tmp_path, wait_for_job
) -> None:
    with pytest.raises(BatchInputError, match="outside the allowed data folders"):
        folder_source("/etc", settings=get_settings())
    (data_root / "escape").symlink_to(tmp_path)
    # Sent as if the folder had been checked: the worker checks again and fails the job with the reason.
    for folder, reason in [("/etc", "outside the allowed data folders"), (str(data_root / "escape"), "symbolic link")]:
        job_id = submit_job("batch", {"source": "folder", "folder": folder, "patient_mode": "none"}, actor=make_actor())
        job = wait_for_job(job_id, timeout=60)
        assert job.status == "failed" and reason in job.error


def test_a_cancelled_job_ends_cancelled(cnn_version, data_root, wait_for_job) -> None:
    for copy in range(4):
        copy_samples(data_root / "big" / f"copy{copy}", 20, labelled=True)
    job_id = submit_batch(
        source=folder_source(str(data_root / "big"), settings=get_settings()), patient_mode="none", actor=make_actor()
    )
    wait_for_job(job_id, statuses=("running",), timeout=60)
    assert "will stop" in cancel_job(job_id, actor=make_actor())
    job = wait_for_job(job_id, timeout=60)
    assert job.status == "cancelled"
    with session_scope() as session:
        assert len(batch_rows(session=session, job_id=job_id)) < 320


def test_a_requeued_job_that_was_half_done_ends_with_every_file_once(cnn_version, data_root, wait_for_job) -> None:
    from services.batch import FileRules, load_models, predict_listing

    folder = data_root / "resume"
    copy_samples(folder, 6, labelled=True)
    params = {
        **folder_source(str(folder), settings=get_settings()),
        "patient_mode": "single",
        "patient_mrn": "P-400",
        "model_version_ids": [cnn_version],
    }
    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params=params).id
    # The first worker did half of the files, committed them, and died: the job is left failed.
    listing = list_folder(folder)
    listing.images = listing.images[:12]
    rules = FileRules("single", "P-400", threshold=0.7, max_bytes=2**24, max_pixels=40_000_000)
    predict_listing(
        job_id, listing, load_models([cnn_version]), rules, progress=lambda *a: None, check_cancel=lambda: None
    )
    with session_scope() as session:
        finish_job(session=session, job_id=job_id, status="failed", error="the worker stopped responding")
    assert requeue_job(job_id, actor=make_actor()) == f"Job {job_id} is queued again."
    job = wait_for_job(job_id, timeout=120)
    assert job.status == "succeeded", job.error
    with session_scope() as session:
        items = list(session.scalars(select(BatchItem.rel_path).where(BatchItem.job_id == job_id)))
        scans = session.scalar(select(func.count()).select_from(Scan).join(Patient).where(Patient.mrn == "P-400"))
        predictions = session.scalar(
            select(func.count()).select_from(Prediction).join(Scan).join(Patient).where(Patient.mrn == "P-400")
        )
        attempts = get_job(session=session, job_id=job_id).attempts
    assert sorted(items) == list_folder(folder).images and len(items) == 24
    assert scans == predictions == 24 and attempts == 1 and job.result["done_before"] == 12


def test_a_job_whose_worker_process_is_killed_is_delivered_again_and_does_each_file_once(
    cnn_version, data_root, worker, wait_for_job
) -> None:
    for copy in range(4):
        copy_samples(data_root / "killed" / f"copy{copy}", 20, labelled=True)
    job_id = submit_batch(
        source=folder_source(str(data_root / "killed"), settings=get_settings()),
        patient_mode="single",
        patient_mrn="P-500",
        actor=make_actor(),
    )
    deadline = time.monotonic() + 60
    while (job := wait_for_job(job_id, statuses=("running",), timeout=60)).progress_current < 32:
        assert time.monotonic() < deadline, "the job never got through its first batch"
        time.sleep(0.1)
    # The pool process running the task dies mid-job, as on an out-of-memory kill; its parent stays up.
    children = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    assert len(children) == 1 and job.progress_current < 320
    os.kill(int(children[0]), signal.SIGKILL)
    job = wait_for_job(job_id, timeout=180)
    assert job.status == "succeeded", job.error
    with session_scope() as session:
        items = list(session.scalars(select(BatchItem.rel_path).where(BatchItem.job_id == job_id)))
        predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.job_id == job_id))
    assert len(items) == len(set(items)) == 320
    # Each of the 80 distinct images is one scan of P-500 with one prediction, however often it was seen.
    assert predictions == 80 and job.attempts == 2 and job.result["done_before"] >= 32


def test_a_patient_deleted_after_a_batch_is_not_created_again_when_the_job_is_re_run(
    cnn_version, data_root, wait_for_job
) -> None:
    from services.records import remove_patient

    folder = data_root / "tombstones"
    for mrn, cls in (("P-GONE", "glioma"), ("P-KEPT", "meningioma")):
        for path in sorted((SAMPLE_DIR / cls).glob("*.jpg"))[:3]:
            (folder / mrn).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / mrn / path.name)
    job_id = submit_batch(
        source=folder_source(str(folder), settings=get_settings()), patient_mode="folder", actor=make_actor()
    )
    assert wait_for_job(job_id, timeout=120).status == "succeeded"
    with session_scope() as session:
        gone = session.scalar(select(Patient).where(Patient.mrn == "P-GONE"))
    remove_patient(make_actor(), patient_pk=gone.id, mrn="P-GONE")
    with session_scope() as session:
        finish_job(session=session, job_id=job_id, status="failed", error="marked failed to run it again")
    assert requeue_job(job_id, actor=make_actor()) == f"Job {job_id} is queued again."
    job = wait_for_job(job_id, timeout=120)
    assert job.status == "succeeded", job.error
    with session_scope() as session:
        mrns = session.scalars(select(Patient.mrn).join(Scan).where(Scan.job_id == job_id).distinct()).all()
        items = session.scalars(select(BatchItem.rel_path).where(BatchItem.job_id == job_id)).all()
        tombstones = session.scalars(text("SELECT path_sha256 FROM batch_tombstones")).all()
    assert mrns == ["P-KEPT"]
    assert sorted(items) == sorted(p for p in list_folder(folder).images if p.startswith("P-KEPT/"))
    assert len(tombstones) == 3 and not any("P-GONE" in t for t in tombstones)  # digests, not paths
