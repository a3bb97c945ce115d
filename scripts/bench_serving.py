"""Training while serving: the app's prediction latency alone and while a training run shares the machine.

Only calls made while an epoch was under way count: an epoch's start is its line's time less its duration.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from scripts import bench_stack
from scripts.benchmark_batch import build_folder
from settings import ROOT, SAMPLE_DIR, get_settings

TRAIN_TIMEOUT_S = 1800


def _train_command(data: Path, out: Path, epochs: int) -> list[str]:
    return [
        *(sys.executable, "-m", "models", "train", "--framework", "torch", "--preset", "report"),
        *("--data", str(data), "--epochs", str(epochs), "--output-dir", str(out)),
    ]


class Training:
    """A training run in its own process, its epoch lines read as they come with the time each arrived."""

    def __init__(self, command: list[str], log: Path) -> None:
        # Its warnings go to a file: a pipe nobody reads while the run goes on would fill and stop it.
        self.log = log
        with log.open("w") as err:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        self.epochs: list[tuple[float, dict[str, Any]]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith('{"epoch"'):
                self.epochs.append((time.perf_counter(), json.loads(line)))

    def running(self) -> bool:
        return self.process.poll() is None

    def finish(self) -> dict[str, Any]:
        """Wait for the end; the run's images/s (mean over its epochs) and the span its epochs took."""
        try:
            self.process.wait(timeout=TRAIN_TIMEOUT_S)
        finally:
            self.process.kill()
        self._reader.join(timeout=10)
        if self.process.returncode != 0 or not self.epochs:
            log = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the training run exited with {self.process.returncode}:\n{log}")
        rows = [row for _, row in self.epochs]
        return {
            "epochs": len(rows),
            "images_per_s": round(sum(r["images_per_s"] for r in rows) / len(rows), 1),
            "epoch_s": [round(r["duration_s"], 1) for r in rows],
        }

    def under_way(self, at: float) -> bool:
        """Whether an epoch was being trained or validated at perf_counter time `at`."""
        return any(arrived - row["duration_s"] <= at <= arrived for arrived, row in self.epochs)


def child(quick: bool, cache: Path) -> dict[str, Any]:
    """In a fresh process: the predictor alone, the training run alone, then both."""
    from models.data.preprocessing import load_rgb
    from services.model_files import file_sha256
    from services.predictors import loaded_predictor

    result: dict[str, Any] = bench_stack.conditions()
    settings = get_settings()
    result["inference_backend"] = settings.inference_backend
    models = bench_stack.bench_models(cache)
    # The app's loader checks the files each model depends on against its version's record: a throw-away one.
    registry = Path(tempfile.mkdtemp(prefix="bench-serving-app-"))
    bench_stack.throwaway_app(registry, models)
    predictors = {fw: loaded_predictor(fw, str(path), file_sha256(path)) for fw, path in models.items()}
    images = [load_rgb(p, size=None) for p in sorted(SAMPLE_DIR.glob("*/*.jpg"))]
    for predictor in predictors.values():
        predictor.predict(images[:1])  # warm-up: sessions allocate their buffers on the first call

    def call(i: int) -> tuple[str, float, float]:
        framework = list(predictors)[i % len(predictors)]
        started = time.perf_counter()
        predictors[framework].predict([images[i // len(predictors) % len(images)]])
        return framework, started, (time.perf_counter() - started) * 1000

    alone = [call(i) for i in range(10 if quick else 400)]

    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        count, epochs = (16, 1) if quick else (300, 3)
        result["training"] = {"framework": "torch", "preset": "report", "images": count, "epochs": epochs}
        result["training"]["images_from"] = build_folder(workdir / "data", count)
        result["training_alone"] = Training(
            _train_command(workdir / "data", workdir / "alone", epochs), workdir / "alone.log"
        ).finish()
        training = Training(_train_command(workdir / "data", workdir / "beside", epochs), workdir / "beside.log")
        beside, i = [], 0
        while training.running():
            beside.append(call(i))
            i += 1
        result["training_while_serving"] = training.finish()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(registry, ignore_errors=True)
    during = [c for c in beside if training.under_way(c[1])]
    result["rows"] = [
        {"model": framework, "while": label, **bench_stack.latency([ms for fw, _, ms in calls if fw == framework])}
        for framework in predictors
        for label, calls in (("alone", alone), ("training", during))
        if any(fw == framework for fw, _, _ in calls)
    ]
    return result


def measure(*, quick: bool, cache: Path) -> dict[str, Any]:
    return bench_stack.run_scenario(__name__, quick=quick, cache=cache, timeout_s=3 * TRAIN_TIMEOUT_S)


def markdown(result: dict[str, Any]) -> list[str]:
    t, threads = result["training"], result["threads"]
    lines = [
        f"| model (backend {result['inference_backend']}, batch 1) | while | calls | p50 ms | p95 ms | images/s |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['model']} | {'alone' if r['while'] == 'alone' else 'a training run beside it'} | {r['calls']} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['images_per_s']:.1f} |"
            for r in result["rows"]
        ),
        "",
        f"The training run: the CNN ({t['preset']} preset) on {t['images']} Training images for {t['epochs']} "
        f"epoch(s): {result['training_alone']['images_per_s']:.1f} training images/s alone, "
        f"{result['training_while_serving']['images_per_s']:.1f} beside the predictions. Threads as shipped: "
        f"TORCH_THREADS={threads['torch']}, TF_THREADS={threads['tf']}, ONNX_THREADS={threads['onnx']}.",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(bench_stack.child_main(child))
