"""A batch job decodes each file in the worker's sandbox, through a real Celery worker into a real SQLite file: a
file that runs a decoder past its limit costs its own error row, a cancel stops the job in the middle of a
decode, and a named pipe put in place of a listed file costs its own error row instead of blocking the job."""

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from db.batches import batch_rows
from db.runs import register_model_version
from db.session import session_scope
from services.batch_input import folder_source, list_folder
from services.model_files import file_sha256
from settings import DEFAULT_MODEL_FILES, SAMPLE_DIR, get_settings
from tests.env import environment
from tests.models.test_sandbox import costly_dicom
from tests.users import make_actor
from worker.submit import cancel_job, submit_batch

# The worker's sandbox: half a second of processor time a file, a quarter of what the costly slice needs.
CPU_S = 0.5


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder batch jobs may read and the worker's limits, set before the worker starts so that it has them."""
    root = tmp_path_factory.mktemp("batch-sandbox")
    with environment(ALLOWED_DATA_ROOTS=str(root), DECODE_CPU_S=str(CPU_S), INFERENCE_BACKEND="framework"):
        yield root


@pytest.fixture(scope="module")
def worker(data_root: Path, module_db_url: str, start_worker: Callable):  # type: ignore[no-untyped-def]
    process = start_worker()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def cnn_version(worker) -> int:  # type: ignore[no-untyped-def]
    """The shipped CNN as the active model: no training needed, and its out-of-distribution check ships with it."""
    path = DEFAULT_MODEL_FILES["torch"]
    with session_scope() as session:
        return register_model_version(
            session=session,
            framework="torch",
            name=path.stem,
            artifact_path=path,
            sha256=file_sha256(path),
            activate=True,
        ).id


@pytest.fixture(scope="module")
def costly() -> bytes:
    return costly_dicom()


def copy_samples(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((SAMPLE_DIR / "glioma").glob("*.jpg"))[:count]:
        shutil.copyfile(path, folder / path.name)


def rows(job_id: int) -> dict[str, tuple[str, str | None]]:
    with session_scope() as session:
        return {row.rel_path: (row.status, row.error) for row in batch_rows(session=session, job_id=job_id)}


def submit(folder: Path) -> int:
    return submit_batch(
        source=folder_source(str(folder), settings=get_settings()), patient_mode="none", actor=make_actor()
    )


def test_a_file_that_runs_its_decoder_past_the_limit_costs_one_error_row(
    cnn_version, data_root, costly, wait_for_job
) -> None:
    folder = data_root / "one-costly"
    copy_samples(folder, 2)
    (folder / "noise.dcm").write_bytes(costly)
    job = wait_for_job(submit(folder), timeout=180)
    assert job.status == "succeeded", job.error
    outcome = rows(job.id)
    assert [status for status, _ in outcome.values()].count("done") == 2
    status, error = outcome["noise.dcm"]
    assert status == "error" and f"decoding it used more than {CPU_S} s of processor time" in error


def test_a_cancel_stops_the_job_within_a_file_or_two(cnn_version, data_root, costly, wait_for_job) -> None:
    """Forty costly slices, each refused at its limit and its child replaced, take the worker a minute or more: the
    cancel is seen before the next file (and while one decodes), not after the 32 files of a chunk."""
    folder = data_root / "forty-costly"
    folder.mkdir()
    (folder / "noise00.dcm").write_bytes(costly)
    for n in range(1, 40):
        (folder / f"noise{n:02}.dcm").symlink_to(folder / "noise00.dcm")  # links inside the folder are read
    job_id = submit(folder)
    wait_for_job(job_id, statuses=("running",), timeout=60)
    time.sleep(1.0)  # the first file is in the sandbox now
    asked = time.monotonic()
    assert "will stop" in cancel_job(job_id, actor=make_actor())
    job = wait_for_job(job_id, timeout=120)
    assert job.status == "cancelled"
    assert time.monotonic() - asked < 10
    assert len(rows(job_id)) < 10


def test_a_named_pipe_put_in_place_of_a_listed_file_costs_its_row_and_the_job_goes_on(
    cnn_version, data_root, module_db_url
) -> None:
    from db.jobs import create_job
    from services.batch import FileRules, load_models, predict_listing

    folder = data_root / "swapped"
    copy_samples(folder, 3)
    with session_scope() as session:
        job_id = create_job(session=session, kind="batch", params={}).id
    listing = list_folder(folder)
    swapped = listing.images[1]
    (folder / swapped).unlink()
    os.mkfifo(folder / swapped)  # after the listing, before the job reads it
    options = FileRules("none", None, threshold=0.7, max_bytes=2**24, max_pixels=2**24)
    models = load_models([cnn_version])
    done = threading.Event()

    def run() -> None:
        predict_listing(job_id, listing, models, options, progress=lambda *a: None, check_cancel=lambda: None)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(120):
        with open(folder / swapped, "wb"):  # let the blocked reader go, so the test run can end
            pass
        pytest.fail("the job still waited on the named pipe after 120 s")
    outcome = rows(job_id)
    assert outcome[swapped][0] == "error" and "no longer a regular file" in outcome[swapped][1]
    assert sorted(status for status, _ in outcome.values()) == ["done", "done", "error"]
