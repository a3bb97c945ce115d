"""Each shipped model called through its framework against the app's ONNX Runtime path: speed, heatmaps, memory.

.venv/bin/python -m scripts.bench_inference [--quick] [--out bench]
"""

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts import bench_results
from scripts.bench_stack import latency, machine, rss_mb
from settings import DEFAULT_MODEL_FILES, ROOT, SAMPLE_DIR, get_settings

BATCH_SIZES = (1, 32)


class KerasPredictCall:
    """The naive Keras call, `model.predict`, with the framework path's preprocessing, mirror TTA and temperature."""

    def __init__(self, path: Path) -> None:
        from models.inference.predictor import KerasPredictor

        self.inner = KerasPredictor(path)

    def predict(self, images: list) -> Any:
        from models.inference.calibration import apply_temperature
        from models.inference.predictor import _stack

        inner = self.inner
        x = _stack(images, inner.crop).astype("float32")
        probs = inner.model.predict(x, verbose=0)
        if inner.tta:
            probs = (probs + inner.model.predict(x[:, :, ::-1, :].copy(), verbose=0)) / 2
        return apply_temperature(probs, inner.temperature)


# The naive call a first version would make where it is not the framework path's own (Keras's model.predict).
NAIVE_CALLS = {"keras": KerasPredictCall}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "tensorflow-cpu", "keras", "onnxruntime")}


def rss_child(backend: str) -> dict[str, Any]:
    """In this (fresh) process: both shipped models loaded on `backend`, one prediction each; RSS after."""
    from models.data.preprocessing import load_rgb
    from models.inference.model_meta import file_sha256
    from models.inference.threads import cap_threads
    from models.training.backends import backends

    settings = get_settings()
    cap_threads(settings.torch_threads, settings.tf_threads)
    image = load_rgb(next(iter(sorted(SAMPLE_DIR.glob("*/*.jpg")))), size=None)
    for framework, path in DEFAULT_MODEL_FILES.items():
        predictor = backends[framework].load_predictor(
            path, backend=backend, sha256=file_sha256(path), threads=settings.onnx_threads
        )
        predictor.predict([image])
        predictor.heatmap(image)
    return {
        "rss_mb": rss_mb(),
        "imported": sorted(m for m in ("torch", "tensorflow", "onnxruntime") if m in sys.modules),
    }


def _child_rss(backend: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "scripts.bench_inference", "--rss-child", backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(model: str, backend: str, batch: int, times_ms: list[float]) -> dict[str, Any]:
    return {"model": model, "backend": backend, "batch": batch, **latency(times_ms, images_per_call=batch)}


def measure(*, quick: bool = False) -> dict[str, Any]:
    """The rows, the ratios and the machine, as results.json holds them."""
    from models.data.preprocessing import load_rgb
    from models.inference.model_meta import file_sha256
    from models.inference.threads import cap_threads
    from models.training.backends import backends

    settings = get_settings()
    cap_threads(settings.torch_threads, settings.tf_threads)
    images = [load_rgb(p, size=None) for p in sorted(SAMPLE_DIR.glob("*/*.jpg"))]
    batches = (1, 4) if quick else BATCH_SIZES
    calls = {1: 3, 4: 2} if quick else {1: 60, 32: 12}
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": _versions(),
        "threads": {"torch": settings.torch_threads, "tf": settings.tf_threads, "onnx": settings.onnx_threads},
        "quick": quick,
        "rows": [],
        "ratios": [],
        "heatmaps": [],
    }
    for framework, path in DEFAULT_MODEL_FILES.items():
        if not path.is_file():
            continue
        sha, backend = file_sha256(path), backends[framework]
        paths = {
            "framework": backend.load_predictor(path),
            "onnx": backend.load_predictor(path, backend="onnx", sha256=sha, threads=settings.onnx_threads),
        }
        if backend.int8:
            paths["onnx-int8"] = backend.load_predictor(
                path, backend="onnx", sha256=sha, threads=settings.onnx_threads, int8=True
            )
        if framework in NAIVE_CALLS:
            paths["keras-predict"] = NAIVE_CALLS[framework](path)
        for batch in batches:
            chunks = [images[(i * batch) % len(images) :][:batch] for i in range(calls[batch] + 1)]
            chunks = [c if len(c) == batch else images[:batch] for c in chunks]
            times: dict[str, list[float]] = {name: [] for name in paths}
            for predictor in paths.values():
                predictor.predict(chunks[0])  # warm-up: graph tracing and allocator growth happen once
            for i, chunk in enumerate(chunks[1:]):
                # Alternate which path goes first, so neither always runs on caches the other warmed.
                order = list(paths.items()) if i % 2 == 0 else list(reversed(paths.items()))
                for name, predictor in order:
                    start = time.perf_counter()
                    predictor.predict(chunk)
                    times[name].append((time.perf_counter() - start) * 1000)
            rows = {name: _row(f"{framework} ({path.name})", name, batch, t) for name, t in times.items()}
            result["rows"] += rows.values()
            # The naive call as a first version would make it: torch's eager model(x) (the framework path), Keras's
            # model.predict.
            naive = rows.get("keras-predict", rows["framework"])
            result["ratios"] += [
                {
                    "model": f"{framework} ({path.name})",
                    "batch": batch,
                    "backend": name,
                    "framework_over_backend_p50": round(rows["framework"]["p50_ms"] / row["p50_ms"], 2),
                    "naive_over_backend_p50": round(naive["p50_ms"] / row["p50_ms"], 2),
                }
                for name, row in rows.items()
                if name != "framework"
            ]
        result["heatmaps"] += _heatmaps(f"{framework} ({path.name})", paths, images, 5 if quick else 30, result)
    result["rss_both_models_mb"] = {backend: _child_rss(backend) for backend in ("framework", "onnx")}
    return result


def _heatmaps(model: str, paths: dict[str, Any], images: list, calls: int, result: dict[str, Any]) -> list[dict]:
    """Each path's heatmap of one image, the two in turn, against the same path's one-image prediction."""
    times: dict[str, list[float]] = {"framework": [], "onnx": []}
    for name in times:
        paths[name].heatmap(images[0])  # warm-up: the heatmap graph's first run
    for i in range(calls):
        order = list(times) if i % 2 == 0 else list(reversed(times))
        for name in order:
            start = time.perf_counter()
            paths[name].heatmap(images[(i + 1) % len(images)])
            times[name].append((time.perf_counter() - start) * 1000)
    predicted = {(r["backend"], r["batch"]): r["p50_ms"] for r in result["rows"] if r["model"] == model}
    out = []
    for name, t in times.items():
        row = {"model": model, "backend": name, **latency(t, images_per_call=1)}
        row["over_prediction_p50"] = round(row["p50_ms"] / predicted[(name, 1)], 2)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few calls at batch 1 and 4: checks that it runs")
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    p.add_argument("--rss-child", choices=("framework", "onnx"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child)))
        return 0
    print("\n".join(bench_results.write(args.out, inference=measure(quick=args.quick))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
