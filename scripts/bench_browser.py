"""Diagnose in a real browser: upload to result with both models and both heatmaps, once the models are warm.

The browser checks on every animation frame, so the wait adds no polling delay.
"""

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts import bench_stack
from scripts.benchmark_batch import build_folder

RESULT_TIMEOUT_MS = 300_000
APP_START_TIMEOUT_S = 120

# True once the page's run is over with file `name` the only one uploaded, `n` answers and `n` heatmap images loaded.
SHOWN = """([name, n]) => {
  const app = document.querySelector('[data-testid=stApp]');
  const main = document.querySelector('[data-testid=stMain]');
  if (!app || !main || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  // The chip shortens a long file name; the analysis's expander gives it whole, before its answer.
  const files = main.querySelectorAll('[data-testid=stFileChipName]').length;
  const named = Array.from(main.querySelectorAll('[data-testid=stExpander] summary'))
    .some(s => s.textContent.includes(name + ' · '));  // after the expander's icon name
  const answers = main.querySelectorAll('[data-testid=stMetricValue]').length;
  const heatmaps = Array.from(main.querySelectorAll('[data-testid=stImage]'))
    .filter(e => e.textContent.includes(' heatmap: '))
    .filter(e => { const img = e.querySelector('img'); return img && img.complete && img.naturalWidth > 0; });
  return files === 1 && named && answers === n && heatmaps.length === n;
}"""
# True once the page's run is over with no file uploaded and no answer left on it.
CLEARED = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  const main = document.querySelector('[data-testid=stMain]');
  return app && main && app.getAttribute('data-test-script-state') === 'notRunning'
    && !main.querySelector('[data-testid=stFileChip]') && !main.querySelector('[data-testid=stMetricValue]');
}"""


def _timed_upload(app, path: Path, models: int) -> float:  # app: scripts.harness.App
    """Seconds from handing `path` to the uploader until its answers and heatmaps are drawn; then removes it."""
    main = app.main()
    started = time.perf_counter()
    main.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(path)
    app.page.wait_for_function(SHOWN, arg=[path.name, models], timeout=RESULT_TIMEOUT_MS, polling="raf")
    seconds = time.perf_counter() - started
    main.get_by_test_id("stFileChipDeleteBtn").click()
    # The removal's own run must be over before the next upload, or that upload would land in it.
    app.page.wait_for_function(CLEARED, timeout=RESULT_TIMEOUT_MS, polling="raf")
    return seconds


def child(quick: bool, cache: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from scripts.harness import (
        CHROMIUM,
        CHROMIUM_ARGS,
        EXPECT_TIMEOUT_MS,
        VIEWPORT,
        App,
        free_port,
        start_app,
        stop_app,
    )

    if not CHROMIUM.is_file():
        return {"skipped": f"no browser at {CHROMIUM} (Debian's chromium package; make test installs it as root)"}
    result: dict[str, Any] = bench_stack.conditions()
    models = bench_stack.bench_models(cache)
    workdir = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    app_process = None
    try:
        bench_stack.throwaway_app(workdir / "app", models)
        count = 1 if quick else 5
        result["images_from"] = build_folder(workdir / "images", count + 1)
        warm_up, *uploads = sorted((workdir / "images").glob("*/*"))
        port = free_port()
        app_process = start_app(port, workdir / "streamlit.log", ready_s=APP_START_TIMEOUT_S)
        url = f"http://127.0.0.1:{port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(EXPECT_TIMEOUT_MS)
            app = App(page, url, None, bench_stack.USERNAME, bench_stack.PASSWORD)
            app.open("Diagnose")
            result["warm_up_s"] = round(_timed_upload(app, warm_up, len(models)), 2)
            seconds = [_timed_upload(app, path, len(models)) for path in uploads]
            result["browser"] = browser.version
            browser.close()
    finally:
        if app_process is not None:
            stop_app(app_process)
        shutil.rmtree(workdir, ignore_errors=True)
    result["uploads_s"] = [round(s, 2) for s in seconds]
    result["median_s"] = round(statistics.median(seconds), 2)
    return result


def measure(*, quick: bool, cache: Path) -> dict[str, Any]:
    return bench_stack.run_scenario(__name__, quick=quick, cache=cache, timeout_s=1800)


def markdown(result: dict[str, Any]) -> list[str]:
    shown = ", ".join(f"{s:.2f}" for s in result["uploads_s"])
    return [
        "| uploads after warm-up | median s (upload → both answers and both heatmaps) | each s | first upload "
        "(models loading) s | browser |",
        "|---|---|---|---|---|",
        f"| {len(result['uploads_s'])} | {result['median_s']:.2f} | {shown} | {result['warm_up_s']:.1f} | "
        f"Chromium {result['browser']} (headless) |",
    ]


if __name__ == "__main__":
    raise SystemExit(bench_stack.child_main(child))
