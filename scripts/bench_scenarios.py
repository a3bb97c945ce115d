"""The benchmark's end-to-end scenarios, each in fresh processes (docs/design/benchmarks.md).

.venv/bin/python -m scripts.bench_scenarios [--quick] [--only NAME ...] [--out bench]
"""

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from scripts import bench_results, bench_stack
from scripts.bench_results import SCENARIOS
from settings import ROOT, get_settings


def measure(*, quick: bool = False, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    cache = get_settings().artifact_dir / "bench-models"
    # The models' copies and exports are made first in a process of their own, as start-up makes them before the
    # app and the workers start: no scenario's process imports a framework to export a model. (Where a shipped
    # model is missing this fails, and each scenario says so.)
    if not bench_stack.bench_models_ready(cache):
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
