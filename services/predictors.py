"""Loaded models, once per process: the app's sessions and a worker's jobs share them."""

import argparse
from functools import lru_cache
from pathlib import Path

from models.inference.predictor import Predictor
from models.inference.threads import cap_threads
from models.training.backends import backend_for_file, backends
from services.model_files import check_file, file_sha256
from settings import DEFAULT_MODEL_FILES, get_settings

# The active model of each framework and a chosen older version or two.
MAX_LOADED = 4


class ModelFileProblem(ValueError):
    """The model file is missing or is no longer the one registered; the message says which."""


@lru_cache(maxsize=MAX_LOADED)
def loaded_predictor(framework: str, artifact_path: str, sha256: str) -> Predictor:
    """The model file loaded once per process, only while it is the file registered with `sha256`
    (ModelFileProblem otherwise: a refusal is not cached, so the file is checked again at the next call)."""
    problem = check_file(artifact_path, sha256).problem(artifact_path)
    if problem:
        raise ModelFileProblem(problem)
    settings = get_settings()
    # The app and the workers share the cores: the frameworks get their capped pools before first use.
    cap_threads(settings.torch_threads, settings.tf_threads)
    backend = backends[framework]
    return backend.load_predictor(
        artifact_path,
        backend=settings.inference_backend,
        sha256=sha256,
        threads=settings.onnx_threads,
        int8=settings.onnx_int8_cnn and backend.int8,
    )


def prepare_export(framework: str, artifact_path: str, sha256: str) -> str:
    """Make the ONNX export the app will predict from (when it predicts on ONNX Runtime), so that neither the
    first scan nor a batch worker waits for it or imports the framework to make it; says what it did."""
    settings = get_settings()
    if settings.inference_backend != "onnx":
        return f"{artifact_path}: predictions run in the framework, no ONNX export needed"
    problem = check_file(artifact_path, sha256).problem(artifact_path)
    if problem:
        raise ModelFileProblem(problem)
    backend = backends[framework]
    backend.make_exports(
        artifact_path, sha256, threads=settings.onnx_threads, int8=settings.onnx_int8_cnn and backend.int8
    )
    return f"{artifact_path}: ONNX export of its predictions and heatmaps ready"


def main(argv: list[str] | None = None) -> int:
    """python -m services.predictors [MODEL ...]: make the ONNX exports of the shipped models (or of the model
    files named) beside them. The Docker image's build runs it, so that every container of the image finds them
    made: its app user cannot write there, and a process that had to make them would load the framework."""
    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    p.add_argument("models", nargs="*", type=Path, default=list(DEFAULT_MODEL_FILES.values()))
    for path in p.parse_args(argv).models:
        try:
            framework = backend_for_file(path).framework
        except ValueError:
            p.error(f"{path}: a model file ends in .pth (the CNN) or .keras (MobileNetV2)")
        if not path.is_file():
            p.error(f"{path}: no such file")
        try:
            print(prepare_export(framework, str(path), file_sha256(path)))
        except Exception as exc:  # a file that does not load (torch and Keras raise their own kinds): say which
            first_line = next(iter(str(exc).splitlines()), "")
            p.error(f"{path}: no ONNX export made: {type(exc).__name__}: {first_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
