"""The benchmark's end-to-end scenarios, each the app's path beside the naive one or the load it meets:

    .venv/bin/python -m scripts.bench_scenarios [--quick] [--only NAME ...] [--out bench]

batch_worker            a 1,000-image batch job through a real Celery worker, ONNX Runtime against the frameworks
training_while_serving  the predictor's latency alone and beside a training run, with the shipped thread settings
uploads_memory          the app's RSS after 100 distinct uploads on the Diagnose page
browser_diagnose        upload to result in headless Chromium, both models and both heatmaps, once warm

Each runs in a fresh process of its own, on copies of the shipped models kept under ARTIFACT_DIR/bench-models
(with their ONNX exports, made once). The figures go under "scenarios" in `<out>/results.json` (the other
figures there are kept) and, as tables, into `<out>/results.md`; the tables are printed. Quick mode runs each on
a few images: it shows that they work, not how fast.
"""

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from scripts import bench_results
from scripts.bench_results import SCENARIOS
from settings import ROOT, get_settings


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few images each: checks that they run")
    p.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="these scenarios only")
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    args = p.parse_args(argv)
    print("\n".join(bench_results.write(args.out, scenarios=measure(quick=args.quick, only=args.only))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
