"""A batch job end to end through a real Celery worker: the app's path (ONNX Runtime) against the frameworks."""

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts import bench_stack
from scripts.benchmark_batch import build_folder
from scripts.harness import start_worker, stop_worker
from settings import get_settings

BACKENDS = {"framework": "framework (naive)", "onnx": "ONNX Runtime (app)"}
JOB_TIMEOUT_S = 1800
WORKER_READY_S = 120


def _one_path(backend: str, folder: Path, data: Path, models: dict[str, Path]) -> dict[str, Any]:
    from db.jobs import get_job
    from db.schema import FINISHED_STATES
    from db.session import session_scope
    from services.batch_input import folder_source
    from worker.submit import submit_batch

    bench_stack.throwaway_app(folder, models, data_root=data)
    name = f"bench-{backend}@{socket.gethostname()}"
    worker = start_worker(name, folder / "worker.log", env={"INFERENCE_BACKEND": backend}, ready_s=WORKER_READY_S)
    try:
        started = time.perf_counter()
        job_id = submit_batch(
            source=folder_source(str(data / "batch"), settings=get_settings()),
            patient_mode="none",
            actor=bench_stack.clinician(),
        )
        while True:
            with session_scope() as session:
                job = get_job(session=session, job_id=job_id)
            if job.status in FINISHED_STATES:
                break
            if time.perf_counter() - started > JOB_TIMEOUT_S:
                raise RuntimeError(f"the {backend} batch job did not finish in {JOB_TIMEOUT_S} s")
            time.sleep(0.1)
        wall_s = time.perf_counter() - started
        if job.status != "succeeded":
            log = (folder / "worker.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the {backend} batch job {job.status}: {job.error}\n{log}")
        # The pool process that ran the job is the one that loaded models: the largest.
        pool = {pid: bench_stack.peak_rss_mb(pid) for pid in bench_stack.children(worker.pid)}
        ran = max(pool, key=pool.__getitem__)
        return {
            "backend": backend,
            "images": job.result["done"],
            "errors": job.result["error"],
            "skipped": job.result["skipped"],
            "wall_s": round(wall_s, 2),
            "job_s": round(job.result["duration_s"], 2),
            "images_per_s": round(job.result["images_per_s"], 1),
            "images_per_s_with_loading": round(job.result["done"] / wall_s, 1),
            "worker_cpu_s": bench_stack.cpu_s(ran),
            "worker_peak_rss_mb": pool[ran],
            "worker_rss_after_mb": bench_stack.rss_mb(ran),
            "worker_main_rss_mb": bench_stack.rss_mb(worker.pid),
            "frameworks_in_worker": bench_stack.frameworks_loaded(ran),
        }
    finally:
        stop_worker(worker)


def child(quick: bool, cache: Path) -> dict[str, Any]:
    """In a fresh process: both paths over the same folder; the figures as results.json holds them."""
    result: dict[str, Any] = bench_stack.conditions()
    models = bench_stack.bench_models(cache)
    workdir = Path(tempfile.mkdtemp(prefix="bench-worker-batch-"))
    try:
        result["images_from"] = build_folder(workdir / "data" / "batch", 8 if quick else 1000)
        with bench_stack.private_redis(workdir) as url:
            # Before anything reads the settings' Redis URL (the Celery app is configured from it when imported).
            os.environ["REDIS_URL"] = url
            get_settings.cache_clear()
            result["rows"] = [_one_path(b, workdir / b, workdir / "data", models) for b in BACKENDS]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = {r["backend"]: r for r in result["rows"]}
    result["onnx_over_framework_images_per_s"] = round(
        rows["onnx"]["images_per_s"] / rows["framework"]["images_per_s"], 2
    )
    result["framework_over_onnx_wall_s"] = round(rows["framework"]["wall_s"] / rows["onnx"]["wall_s"], 2)
    return result


def measure(*, quick: bool, cache: Path) -> dict[str, Any]:
    return bench_stack.run_scenario(__name__, quick=quick, cache=cache, timeout_s=2 * JOB_TIMEOUT_S)


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "| path | images predicted (skipped) | wall s (submit → done, models loaded in the job) | job images/s "
        "(decode, predict, write) | worker CPU s | worker RSS MB, peak / after | frameworks in the worker |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {BACKENDS[r['backend']]} | {r['images']} ({r['skipped']}) | {r['wall_s']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['worker_cpu_s']:.1f} | {r['worker_peak_rss_mb']:.0f} / "
            f"{r['worker_rss_after_mb']:.0f} | {', '.join(r['frameworks_in_worker'])} |"
        )
    lines += [
        "",
        f"The app's path against the naive one: {result['onnx_over_framework_images_per_s']:.2f}× the job's "
        f"images/s, and {result['framework_over_onnx_wall_s']:.2f}× less wall time with model loading.",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(bench_stack.child_main(child))
