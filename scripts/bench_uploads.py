"""The app's memory after many distinct uploads: the Diagnose page under AppTest in one process, as one server."""

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts import bench_stack
from scripts.benchmark_batch import build_folder
from settings import ROOT

PAGE = ROOT / "views" / "1_Diagnose.py"


def child(quick: bool, cache: Path) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    from scripts.harness import signed_in_as

    result: dict[str, Any] = bench_stack.conditions()
    models = bench_stack.bench_models(cache)
    workdir = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    try:
        bench_stack.throwaway_app(workdir / "app", models)
        count = 5 if quick else 100
        result["images_from"] = build_folder(workdir / "images", count)
        uploads = sorted((workdir / "images").glob("*/*"))
        at = signed_in_as(AppTest.from_file(str(PAGE), default_timeout=300), bench_stack.clinician())
        at.run()
        result["rss_page_open_mb"] = bench_stack.rss_mb()
        runs_ms, answered = [], 0
        for position, path in enumerate(uploads):
            at.file_uploader(key="diagnose_files").set_value([(path.name, path.read_bytes(), "image/jpeg")])
            started = time.perf_counter()
            at.run()
            runs_ms.append((time.perf_counter() - started) * 1000)
            if at.exception:
                raise RuntimeError(f"the page failed on {path.name}: {at.exception[0].value}")
            answered += len(at.metric) == len(models)
            if position == 0:
                result["rss_after_first_upload_mb"] = bench_stack.rss_mb()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.update(
        uploads=len(uploads),
        answered_by_both_models=answered,
        rss_after_mb=bench_stack.rss_mb(),
        peak_rss_mb=bench_stack.peak_rss_mb(),
        first_page_run_ms=round(runs_ms[0], 1),
        page_run=bench_stack.latency(runs_ms[1:]),
        frameworks_loaded=bench_stack.frameworks_loaded(),
    )
    return result


def measure(*, quick: bool, cache: Path) -> dict[str, Any]:
    return bench_stack.run_scenario(__name__, quick=quick, cache=cache, timeout_s=3600)


def markdown(result: dict[str, Any]) -> list[str]:
    run = result["page_run"]
    return [
        "| distinct uploads | RSS MB, page open | after the first | after the last | peak | first page run ms "
        "| later page runs p50 / p95 ms | frameworks loaded |",
        "|---|---|---|---|---|---|---|---|",
        f"| {result['uploads']} | {result['rss_page_open_mb']:.0f} | {result['rss_after_first_upload_mb']:.0f} | "
        f"{result['rss_after_mb']:.0f} | {result['peak_rss_mb']:.0f} | {result['first_page_run_ms']:.0f} | "
        f"{run['p50_ms']:.0f} / {run['p95_ms']:.0f} | {', '.join(result['frameworks_loaded'])} |",
        "",
        f"{result['answered_by_both_models']} of the {result['uploads']} uploads were answered by both models"
        + (
            "."
            if result["answered_by_both_models"] == result["uploads"]
            else "; the brain-MRI check held back the rest."
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(bench_stack.child_main(child))
