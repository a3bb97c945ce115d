"""The benchmark's end-to-end scenarios, each the app's path beside the naive one or the load it meets:

    .venv/bin/python -m scripts.bench_scenarios [--quick] [--only NAME ...] [--out bench]

batch_worker            a 1,000-image batch job through a real Celery worker, ONNX Runtime against the frameworks
training_while_serving  the predictor's latency alone and beside a training run, with the shipped thread settings
uploads_memory          the app's RSS after 100 distinct uploads on the Diagnose page
browser_diagnose        upload to result in headless Chromium, both models and both heatmaps, once warm
series_pacs             a 100-slice series by C-STORE to the listener, to its answer and its report in Orthanc

Each runs in a fresh process of its own, on copies of the shipped models kept under ARTIFACT_DIR/bench-models
(with their ONNX exports, made once). The figures go under "scenarios" in `<out>/results.json` (the other
figures there are kept) and, as tables, into `<out>/results.md`; the tables are printed. Quick mode runs each on
a few images: it shows that they work, not how fast.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from scripts import bench_browser, bench_inference, bench_pacs, bench_serving, bench_uploads, bench_worker_batch
from settings import ROOT, get_settings

SCENARIOS = {
    "batch_worker": bench_worker_batch,
    "training_while_serving": bench_serving,
    "uploads_memory": bench_uploads,
    "browser_diagnose": bench_browser,
    "series_pacs": bench_pacs,
}
TITLES = {
    "batch_worker": "Batch job through the worker, both models",
    "training_while_serving": "Prediction latency while a training run shares the machine",
    "uploads_memory": "App memory after distinct uploads on the Diagnose page",
    "browser_diagnose": "Diagnose in the browser: upload to result",
    "series_pacs": "A DICOM series from the scanner to its answer and back to the PACS",
}


def measure(*, quick: bool = False, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    cache = get_settings().artifact_dir / "bench-models"
    # The models' copies and exports are made first in a process of their own, as start-up makes them before the
    # app and the workers start: no scenario's process imports a framework to export a model. (Where a shipped
    # model is missing this fails, and each scenario says so.)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from scripts.bench_stack import bench_models; "
            "bench_models(Path(sys.argv[1]))",
            str(cache),
        ],
        cwd=ROOT,
        capture_output=True,
    )
    return {name: SCENARIOS[name].measure(quick=quick, cache=cache) for name in only or SCENARIOS}


def conditions_line(result: dict[str, Any]) -> str:
    m, threads = result["machine"], result["threads"]
    return (
        f"Measured {result['date']} on {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none shown'}; "
        f"1-minute load average {m['load_average_1min_at_start']:.2f} at the start; threads torch/tf/onnx "
        f"{threads['torch']}/{threads['tf']}/{threads['onnx']}."
    )


def markdown(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, result in scenarios.items():
        lines += ["", f"### {TITLES[name]}", ""]
        if "skipped" in result:
            lines.append(f"Not measured: {result['skipped']}.")
        else:
            lines += [*SCENARIOS[name].markdown(result), "", conditions_line(result)]
    return lines


def write(scenarios: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """Merge the scenarios into `<out>/results.json`, write `<out>/results.md` again; returns their tables."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result["scenarios"] = {**result.get("scenarios", {}), **scenarios}
    path.write_text(json.dumps(result, indent=2) + "\n")
    inference = bench_inference.markdown(result) if "rows" in result else []
    (out / "results.md").write_text("\n".join([*inference, *markdown(result["scenarios"])]) + "\n")
    return markdown(scenarios)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few images each: checks that they run")
    p.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="these scenarios only")
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    args = p.parse_args(argv)
    print("\n".join(write(measure(quick=args.quick, only=args.only), args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
