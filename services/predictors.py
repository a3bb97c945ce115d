"""Loaded models, once per process: the app's sessions and a worker's jobs share them."""

import argparse
from functools import lru_cache
from pathlib import Path

from domain import ModelFileRole
from models.inference.predictor import Predictor
from models.inference.threads import cap_threads
from models.training.backends import backend_for_file, backends
from services.model_files import CompanionFiles, ModelFileProblem, check_file, file_sha256
from settings import DEFAULT_MODEL_FILES, get_settings

# The active model of each framework and a chosen older version or two.
MAX_LOADED = 4
# Not opened by the predictor, but its answers depend on them: checked when it is loaded.
CHECKED_AT_LOAD = (ModelFileRole.OOD_STATS, ModelFileRole.OOD_REPORT, ModelFileRole.PAIR_REPORT)


@lru_cache(maxsize=MAX_LOADED)
def loaded_predictor(framework: str, artifact_path: str, sha256: str) -> Predictor:
    """The model file loaded once per process, only while it is the file registered with `sha256` and the files its
    answers depend on are those recorded when they were made (ModelFileProblem otherwise, in words: a refusal is not
    cached, so the files are checked again at the next call). Exports made by this load are recorded."""
    problem = check_file(artifact_path, sha256).problem(artifact_path)
    if problem:
        raise ModelFileProblem(problem)
    settings = get_settings()
    files = CompanionFiles.of(artifact_path, sha256)
    files.verify(*CHECKED_AT_LOAD)
    # The app and the workers share the cores: the frameworks get their capped pools before first use.
    cap_threads(settings.torch_threads, settings.tf_threads)
    backend = backends[framework]
    predictor = backend.load_predictor(
        artifact_path,
        backend=settings.inference_backend,
        sha256=sha256,
        threads=settings.onnx_threads,
        int8=settings.onnx_int8_cnn and backend.int8,
        check=files.check,
    )
    files.save()
    return predictor


def prepare_export(framework: str, artifact_path: str, sha256: str, *, record: bool = True) -> str:
    """Make the ONNX export the app will predict from (when it predicts on ONNX Runtime), so that neither the
    first scan nor a batch worker waits for it or imports the framework to make it, and record it with the model's
    versions (not with `record=False`: where there is no database yet, as in the image's build, whose exports are
    recorded when the shipped models are registered); says what it did. An export that is not the one recorded
    is refused (ModelFileProblem), not used."""
    settings = get_settings()
    if settings.inference_backend != "onnx":
        return f"{artifact_path}: predictions run in the framework, no ONNX export needed"
    problem = check_file(artifact_path, sha256).problem(artifact_path)
    if problem:
        raise ModelFileProblem(problem)
    backend = backends[framework]
    int8 = settings.onnx_int8_cnn and backend.int8
    if not record:
        backend.make_exports(artifact_path, sha256, threads=settings.onnx_threads, int8=int8)
        return f"{artifact_path}: ONNX export of its predictions and heatmaps ready"
    files = CompanionFiles.of(artifact_path, sha256)
    backend.make_exports(artifact_path, sha256, threads=settings.onnx_threads, int8=int8, check=files.check)
    files.save()
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
            print(prepare_export(framework, str(path), file_sha256(path), record=False))
        except Exception as exc:  # a file that does not load (torch and Keras raise their own kinds): say which
            first_line = next(iter(str(exc).splitlines()), "")
            p.error(f"{path}: no ONNX export made: {type(exc).__name__}: {first_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
