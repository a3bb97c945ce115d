"""A series from the scanner to its answer and back to the PACS, through real parts.

    .venv/bin/python -m scripts.bench_scenarios --only series_pacs [--quick]

A 100-slice MR series (quick mode 6), written from Training images (the sample, made distinct, where the dataset
is absent), is sent by DCMTK's storescu to the DICOM listener (`make run`'s process) of a throw-away app; a
worker started with `make run`'s command line predicts it with both shipped models on ONNX Runtime and sends its
report and heatmap captures by C-STORE to a throw-away Orthanc. Timed from the first C-STORE: the series' answer
in the database, and the report in Orthanc. The wait for DICOM_SERIES_IDLE_S (the listener's default, 10 s)
without a new instance is part of both, and given apart.
"""

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts import bench_stack
from scripts.bench_worker_batch import WORKER_READY_S
from scripts.benchmark_batch import build_folder
from scripts.harness import start_worker, stop_worker
from settings import get_settings

SERIES_TIMEOUT_S = 900
IDLE_S = 10.0


def _wait(what: str, check: Any, timeout_s: float) -> float:
    """Poll `check()` until it is true; returns the time.perf_counter() at which it was seen true."""
    deadline = time.perf_counter() + timeout_s
    while not check():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.perf_counter()


def _series_answered(series_uid: str) -> bool:
    from db.series import series_with_uid
    from db.session import read_scope

    with read_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        return series is not None and series.status in ("answered", "failed")


def child(quick: bool, cache: Path) -> dict[str, Any]:
    """In a fresh process: the series sent, answered and its report delivered; the figures as results.json holds them."""
    from scripts.dicom_peers import Orthanc, start_listener, storescu

    for tool in ("storescu", "echoscu", "/usr/sbin/Orthanc"):
        if shutil.which(tool) is None and not Path(tool).is_file():
            raise FileNotFoundError(f"{tool} is not installed (make test installs it as root)")
    result: dict[str, Any] = bench_stack.conditions()
    models = bench_stack.bench_models(cache)
    workdir = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    slices = 6 if quick else 100
    try:
        result["images_from"] = build_folder(workdir / "images", slices)
        images = sorted((workdir / "images").rglob("*.jpg"))[:slices]
        from pydicom import dcmread

        from scripts.make_series import series_files

        folder = workdir / "series"
        folder.mkdir()
        files = []
        for number, data in enumerate(series_files(images, patient_id="BENCH-1"), start=1):
            files.append(folder / f"{number:04d}.dcm")
            files[-1].write_bytes(data)
        header = dcmread(files[0], stop_before_pixels=True)
        study_uid, series_uid = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)
        orthanc = Orthanc(workdir / "orthanc", aet="RESULTS")
        with bench_stack.private_redis(workdir) as url:
            env = bench_stack.throwaway_app(workdir / "app", models)
            env |= {
                "REDIS_URL": url,
                "DICOM_SPOOL_DIR": str(workdir / "spool"),
                "DICOM_DESTINATION": orthanc.destination,
                "DICOM_SERIES_IDLE_S": str(IDLE_S),
            }
            os.environ.update(env)
            get_settings.cache_clear()
            orthanc.start()
            worker = start_worker(
                f"bench-pacs@{socket.gethostname()}",
                workdir / "worker.log",
                env={"INFERENCE_BACKEND": "onnx"},
                ready_s=WORKER_READY_S,
            )
            listener = start_listener(workdir)
            try:
                started = time.perf_counter()
                sent = storescu(listener.port, listener.aet, files)
                stored_at = time.perf_counter()
                if sent.returncode != 0:
                    raise RuntimeError(f"storescu failed: {sent.stderr[-2000:]}")
                answered_at = _wait("the series' answer", lambda: _series_answered(series_uid), SERIES_TIMEOUT_S)
                report_at = _wait("the report in Orthanc", lambda: _report_in(orthanc, study_uid), SERIES_TIMEOUT_S)
                job = _series_job(series_uid)
            finally:
                listener.stop()
                stop_worker(worker)
                orthanc.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.update(
        slices=slices,
        idle_s=IDLE_S,
        c_store_s=round(stored_at - started, 2),
        answer_s=round(answered_at - started, 2),
        report_in_pacs_s=round(report_at - started, 2),
        job_images_per_s=job.get("images_per_s") and round(job["images_per_s"], 1),
        label=job.get("series_answer", {}).get("label"),
        predicted=job.get("done"),
    )
    return result


def _report_in(orthanc: Any, study_uid: str) -> bool:
    """Whether Orthanc holds an SR series in the study (its REST API's own search)."""
    query = {"Level": "Series", "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}}
    return bool(orthanc.post("/tools/find", query))


def _series_job(series_uid: str) -> dict[str, Any]:
    from db.jobs import get_job
    from db.series import series_with_uid
    from db.session import read_scope

    with read_scope() as session:
        series = series_with_uid(session=session, series_uid=series_uid)
        job = get_job(session=session, job_id=series.job_id) if series and series.job_id else None
        return dict(job.result or {}) if job else {}


def measure(*, quick: bool, cache: Path) -> dict[str, Any]:
    return bench_stack.run_scenario(__name__, quick=quick, cache=cache, timeout_s=3 * SERIES_TIMEOUT_S)


def markdown(result: dict[str, Any]) -> list[str]:
    processing = result["answer_s"] - result["idle_s"]
    return [
        "| slices | storescu, all slices s | first C-STORE → answer s | of which the idle wait s | "
        "first C-STORE → report in the PACS s | job images/s (decode, check, both models, write) |",
        "|---|---|---|---|---|---|",
        f"| {result['slices']} | {result['c_store_s']:.1f} | {result['answer_s']:.1f} | {result['idle_s']:.0f} | "
        f"{result['report_in_pacs_s']:.1f} | {result['job_images_per_s'] or 0:.1f} |",
        "",
        f"Without the idle wait, the answer came {processing:.1f} s after the first C-STORE; the report and "
        f"the heatmap captures reached Orthanc {result['report_in_pacs_s'] - result['answer_s']:.1f} s after it.",
    ]


if __name__ == "__main__":
    raise SystemExit(bench_stack.child_main(child))
