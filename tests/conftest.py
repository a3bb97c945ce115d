"""Shared fixtures. Every test runs against real parts: a real SQLite file, real Redis, a real worker process.

Session set-up (before any test module is imported):
    The whole session gets its own Redis database number (1-15, held by a lock key, emptied first), so two
    test sessions on one machine never see each other's messages or workers, and never the app's (db 0).
    DATABASE_URL, ARTIFACT_DIR, UPLOAD_DIR and DICOM_SPOOL_DIR point into a temporary folder, so no test touches
    var/.
    Whenever a fixture points the tests at a new database, the session's queues are emptied: a message left
    by an earlier test names a job id of another database.

Fixtures:
    db_url            a fresh, migrated SQLite file for one test; the environment, settings and engine point
                      at it, as do ARTIFACT_DIR/UPLOAD_DIR/DICOM_SPOOL_DIR (fresh temp folders). Yields the URL.
    any_db_url        the same, run once on SQLite and once on PostgreSQL (a throw-away database created on
                      the server at 127.0.0.1:5432 and dropped after; skipped when the server does not answer).
    module_db_url     like db_url but shared by all tests of a module: what a worker process needs, since the
                      worker is started once with one DATABASE_URL. Don't mix it with db_url in one module.
    start_worker      session-scoped factory: start_worker() starts a real `celery -A worker.celery_app worker`
                      process with the current environment (start_worker(arguments=[...], name=...) another
                      command line) and returns it once it answers a ping; every
                      worker it started is stopped at the end of the session (or by .stop()).
    worker            a worker for the module, on module_db_url; stopped when the module is done.
    wait_for_job      wait_for_job(job_id, statuses=("succeeded", "failed", "cancelled"), timeout=60) polls the
                      jobs table until the job is in one of `statuses` and returns the Job row.
    dicom_bytes       dicom_bytes(pixels=..., photometric=..., center=..., width=..., patient_mrn=...) writes an
                      MR DICOM in memory (16-bit, rescale 2/-100, a window, PatientName "Doe^Jane").
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from db.schema import FINISHED_STATES, Job
from scripts import harness
from scripts.harness import RedisServer
from settings import DEFAULT_MODEL_FILES, get_settings
from tests.skip import skip_unless_required

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

_REDIS_LOCK_KEY = "brainmri:test-session"
_session_state: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _make_shipped_exports()
    tmp = Path(tempfile.mkdtemp(prefix="brainmri-tests-"))
    _session_state["tmp"] = tmp
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'unmigrated.db'}"
    os.environ["ARTIFACT_DIR"] = str(tmp / "artifacts")
    os.environ["UPLOAD_DIR"] = str(tmp / "scans")
    os.environ["DICOM_SPOOL_DIR"] = str(tmp / "dicom")
    _claim_redis_db()
    get_settings.cache_clear()


def _make_shipped_exports() -> None:
    """Before pytest-xdist starts its workers: the shipped models' ONNX exports made once, so that two workers
    never write the same export file at the same time (each would record its own bytes). One process per model,
    both at once: each export is single-threaded work."""
    makers = [
        subprocess.Popen([sys.executable, "-m", "services.predictors", str(path)], stdout=subprocess.DEVNULL)
        for path in DEFAULT_MODEL_FILES.values()
    ]
    for maker in makers:
        maker.wait()


# Modules that share a session fixture run on one xdist worker, so it is made once.
SHARED_GROUPS = {
    "tests/models/test_resume.py": "tiny-keras-run",
    "tests/models/test_weight_average.py": "tiny-keras-run",
}


# Modules whose tests share nothing and each take long: their tests are shared out one by one.
SPREAD = {"tests/test_benchmark.py"}


def xdist_group_of(nodeid: str) -> str:
    """What runs together on one pytest-xdist worker: the browser tests (they share one running stack), modules
    that share a session fixture, and otherwise each module whole (its module-scoped Celery worker and database
    start once)."""
    module = nodeid.split("::")[0]
    if module.startswith("tests/e2e/"):
        return "browser"
    if module in SPREAD:
        return nodeid
    return SHARED_GROUPS.get(module, module)


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return Groups(config, log)


# A test that starts a real process through one of these (a Celery worker, the app, a browser) is slow.
PROCESS_FIXTURES = {"worker", "start_worker", "stack", "app", "admin_app", "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config: pytest.Config) -> None:
    client = _session_state.get("redis")
    if isinstance(client, redis.Redis):
        client.flushdb()
        client.close()
    shutil.rmtree(_session_state.get("tmp", ""), ignore_errors=True)


def _claim_redis_db() -> None:
    """Point REDIS_URL at a Redis database number no other test session holds, and empty it."""
    base = urlsplit(get_settings().redis_url)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    for number in range(1, 16):
        url = urlunsplit(base._replace(path=f"/{number}"))
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            claimed = client.set(_REDIS_LOCK_KEY, owner, nx=True, ex=6 * 3600)
        except redis.RedisError:
            return  # no Redis: the tests that need it skip themselves
        if not claimed and _holder_is_gone(client.get(_REDIS_LOCK_KEY)):
            # A session killed before it could let go (a timeout, Ctrl-C twice) holds it no more.
            client.delete(_REDIS_LOCK_KEY)
            claimed = client.set(_REDIS_LOCK_KEY, owner, nx=True, ex=6 * 3600)
        if claimed:
            # Whatever a crashed earlier session left here (queued messages, results) must not reach our worker.
            for key in client.scan_iter():
                if key != _REDIS_LOCK_KEY.encode():
                    client.delete(key)
            os.environ["REDIS_URL"] = url
            _session_state["redis"] = client
            return
        client.close()
    raise pytest.UsageError("every Redis database 1-15 is held by another test session")


def _holder_is_gone(holder: bytes | None) -> bool:
    """Whether the test session that holds a Redis database ran on this machine and its process is gone."""
    host, _, pid = (holder or b"").decode(errors="replace").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _point_at(mp: pytest.MonkeyPatch, url: str, folder: Path) -> None:
    """Aim environment, settings and engine at database `url` and fresh folders under `folder`."""
    from db.session import reset_engine

    mp.setenv("DATABASE_URL", url)
    mp.setenv("ARTIFACT_DIR", str(folder / "artifacts"))
    mp.setenv("UPLOAD_DIR", str(folder / "scans"))
    mp.setenv("DICOM_SPOOL_DIR", str(folder / "dicom"))
    get_settings.cache_clear()
    reset_engine()
    _purge_queues()


def _purge_queues() -> None:
    """Drop messages left by earlier tests: their job ids belong to another database."""
    if "redis" in _session_state:
        from worker.celery_app import celery_app

        celery_app.control.purge()


def _restore(mp: pytest.MonkeyPatch) -> None:
    from db.session import reset_engine

    reset_engine()
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session with Alembic; each test gets a copy, which is much faster."""
    from db.migrate import upgrade_to_head

    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


def _fresh_sqlite(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "brainmri.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def db_url(tmp_path: Path, migrated_sqlite_template: Path) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    url = _fresh_sqlite(migrated_sqlite_template, tmp_path / "db")
    _point_at(mp, url, tmp_path)
    yield url
    _restore(mp)


@pytest.fixture(scope="module")
def module_db_url(tmp_path_factory: pytest.TempPathFactory, migrated_sqlite_template: Path) -> Iterator[str]:
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("module")
    url = _fresh_sqlite(migrated_sqlite_template, folder / "db")
    _point_at(mp, url, folder)
    yield url
    _restore(mp)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A throw-away PostgreSQL database, migrated with Alembic; skipped when the server does not answer."""
    psycopg = pytest.importorskip("psycopg")
    from db.migrate import upgrade_to_head

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        skip_unless_required(f"PostgreSQL does not answer at {POSTGRES_ADMIN_URL}: {exc}")
    name = f"brainmri_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    mp = pytest.MonkeyPatch()
    try:
        upgrade_to_head(url)
        _point_at(mp, url, tmp_path)
        yield url
    finally:
        _restore(mp)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("db_url" if request.param == "sqlite" else "postgres_url")


@dataclass
class WorkerProcess:
    """A real Celery worker running in its own process group."""

    process: subprocess.Popen[bytes]
    name: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Warm shutdown (finish the current task), then kill the group if it takes too long."""
        harness.stop_worker(self.process)


def _redis_answers() -> bool:
    client = redis.Redis.from_url(get_settings().redis_url, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def start_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(
        env: dict[str, str] | None = None,
        ready_timeout: float = 90.0,
        *,
        arguments: list[str] | None = None,
        name: str | None = None,
    ) -> WorkerProcess:
        """`arguments` replace the `celery` arguments before `-n` (default: both queues, one prefork process)."""
        if not _redis_answers():
            skip_unless_required(f"Redis does not answer at {get_settings().redis_url}")
        name = name or f"test-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        log_path = logs / f"{name.split('@')[0]}-{len(started)}.log"
        arguments = arguments or [*harness.WORKER_ARGUMENTS, "--pool=prefork", "--concurrency=1"]
        try:
            process = harness.start_worker(name, log_path, arguments=arguments, env=env, ready_s=ready_timeout)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        worker = WorkerProcess(process, name, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def worker(module_db_url: str, start_worker: Callable[..., WorkerProcess]) -> Iterator[WorkerProcess]:
    process = start_worker()
    yield process
    process.stop()


def _wait_for_job(job_id: int, statuses: Iterable[str] = FINISHED_STATES, timeout: float = 60.0) -> Job:
    from db.jobs import get_job
    from db.session import session_scope

    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        with session_scope() as session:
            job = get_job(session=session, job_id=job_id)
        if job is not None and job.status in wanted:
            return job
        if time.monotonic() > deadline:
            state = "missing" if job is None else f"{job.status}, message={job.message!r}, error={job.error!r}"
            raise AssertionError(f"job {job_id} not in {sorted(wanted)} after {timeout:.0f}s: {state}")
        time.sleep(0.2)


@pytest.fixture
def wait_for_job() -> Callable[..., Job]:
    return _wait_for_job


@pytest.fixture
def dicom_bytes() -> Callable[..., bytes]:
    """Write an MR DICOM in memory: 16-bit MONOCHROME2 with rescale and window, and a patient name that must not be kept."""
    import io

    import numpy as np
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from settings import SAMPLE_DIR

    def make(
        *,
        pixels: "np.ndarray | None" = None,
        photometric: str = "MONOCHROME2",
        center: float | None = 4000.0,
        width: float = 8200.0,
        patient_mrn: str = "P-0042",
        modality: str = "MR",
    ) -> bytes:
        if pixels is None:
            sample = sorted((SAMPLE_DIR / "pituitary").glob("*.jpg"))[0]
            # 12-bit stored values, as an MR scanner writes them.
            pixels = np.asarray(Image.open(sample).convert("L"), dtype=np.uint16) * 16
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("scan.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientBirthDate, ds.PatientID = "Doe^Jane", "19700101", patient_mrn
        ds.StudyDate, ds.Modality, ds.SeriesDescription = "20240131", modality, "AX T1 POST"
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -100
        if center is not None:
            ds.WindowCenter, ds.WindowWidth = center, width
        ds.PixelData = pixels.astype("<u2").tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    return make


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server only this test uses; skipped where redis-server is not installed."""
    if shutil.which("redis-server") is None:
        skip_unless_required("redis-server is not installed")
    server = RedisServer(harness.free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
