"""A batch job on ONNX Runtime predicts with both models and the out-of-distribution check without importing
torch or TensorFlow (a batch makes no heatmaps) once start-up has made the exports: run in a fresh process, as a
worker would run it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from db.jobs import create_job
from db.runs import register_model_version
from db.session import session_scope
from models.evaluation.ood import stats_path
from services.batch_input import folder_source
from services.model_files import file_sha256
from services.predictors import prepare_export
from settings import DEFAULT_MODEL_FILES, ROOT, SAMPLE_DIR, get_settings
from tests.env import environment

JOB = """
import json, sys
from services.batch import run_batch
result = run_batch(int(sys.argv[1]), json.loads(sys.argv[2]), progress=lambda *a: None, check_cancel=lambda: None)
print(json.dumps({
    "done": result["done"],
    "skipped": result["skipped"],
    "ood_check": result["ood_check"],
    "imported": sorted(m for m in ("torch", "tensorflow", "keras") if m in sys.modules),
}))
"""


@pytest.mark.slow
def test_a_batch_on_onnx_runtime_imports_neither_torch_nor_tensorflow(db_url, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    copies = {}
    for framework, source in DEFAULT_MODEL_FILES.items():
        if not source.is_file():
            pytest.skip(f"no shipped {framework} model at {source}")
        for path in (source, Path(str(source) + ".json"), stats_path(source)):
            if path.is_file():
                shutil.copyfile(path, models / path.name)
        copies[framework] = models / source.name
        # The export, made as start-up makes it (services/bootstrap.py) before any worker loads the model.
        assert prepare_export(framework, str(copies[framework]), file_sha256(copies[framework])).endswith("ready")

    folder = tmp_path / "scans"
    for label in ("glioma", "meningioma", "notumor", "pituitary"):
        (folder / label).mkdir(parents=True)
        for path in sorted((SAMPLE_DIR / label).glob("*.jpg"))[:2]:
            shutil.copyfile(path, folder / label / path.name)
    with environment(ALLOWED_DATA_ROOTS=str(tmp_path), INFERENCE_BACKEND="onnx"):
        with session_scope() as session:
            ids = [
                register_model_version(
                    session=session,
                    framework=framework,
                    name=path.stem,
                    artifact_path=path,
                    sha256=file_sha256(path),
                    activate=True,
                ).id
                for framework, path in copies.items()
            ]
            params = {
                **folder_source(str(folder), settings=get_settings()),
                "patient_mode": "none",
                "patient_mrn": None,
                "model_version_ids": ids,
            }
            job_id = create_job(session=session, kind="batch", params=params).id
        out = subprocess.run(
            [sys.executable, "-c", JOB, str(job_id), json.dumps(params)],
            cwd=ROOT,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["done"] == 8 and report["skipped"] == 0
    assert report["ood_check"].startswith("Each image is first checked to be a brain MRI slice")
    assert report["imported"] == []
