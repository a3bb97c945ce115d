"""Time a batch prediction job over a 1,000-image folder, in this process, against a throw-away database.

.venv/bin/python -m scripts.benchmark_batch [--images 1000] [--frameworks torch,keras]
"""

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from db.schema import CLASSES
from settings import DEFAULT_MODEL_FILES, ROOT, SAMPLE_DIR, get_settings

TRAINING_DIR = ROOT.parent / "shared" / "data" / "brain-mri" / "Training"


def build_folder(dest: Path, count: int) -> str:
    """`count` images under dest/<class>/; returns where they came from."""
    if TRAINING_DIR.is_dir():
        per_class = -(-count // len(CLASSES))
        made = 0
        for cls in CLASSES:
            (dest / cls).mkdir(parents=True)
            for path in sorted((TRAINING_DIR / cls).glob("*.jpg"))[:per_class]:
                if made == count:
                    break
                shutil.copyfile(path, dest / cls / path.name)
                made += 1
        return f"copies of {TRAINING_DIR}"
    import numpy as np
    from PIL import Image

    sources = [(cls, p) for cls in CLASSES for p in sorted((SAMPLE_DIR / cls).glob("*.jpg"))]
    for i in range(count):
        cls, path = sources[i % len(sources)]
        pixels = np.asarray(Image.open(path).convert("RGB")).copy()
        # A different corner pixel per copy: the files differ, so none is taken for another's duplicate.
        pixels[0, 0] = [(i // 65536) % 256, (i // 256) % 256, i % 256]
        (dest / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(dest / cls / f"{i:05d}-{path.name}", quality=95)
    return f"the sample in {SAMPLE_DIR}, with pixel changes"


def register_models(frameworks: list[str], workdir: Path) -> list[str]:
    """Register and activate a model per framework; returns a line per model saying which it is."""
    from db.runs import register_model_version
    from db.session import session_scope
    from models.training.backends import backends
    from models.training.config import make_config
    from models.training.run import run_training
    from services.model_files import file_sha256

    lines = []
    for framework in frameworks:
        path = DEFAULT_MODEL_FILES[framework]
        if path.is_file():
            lines.append(f"{framework}: the shipped model {path.name}")
        else:
            preset = backends[framework].offline_preset
            cfg = make_config(
                framework,
                str(SAMPLE_DIR),
                preset,
                epochs=1,
                batch_size=16,
                max_images_per_class=4,
                output_dir=str(workdir / f"tiny-{framework}"),
            )
            path = run_training(cfg).best_path
            lines.append(
                f"{framework}: no shipped model yet, so a tiny one trained for this benchmark ({preset} preset)"
            )
        with session_scope() as session:
            register_model_version(
                session=session,
                framework=framework,
                name=path.stem,
                artifact_path=path,
                sha256=file_sha256(path),
                activate=True,
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--frameworks", default="torch,keras", help="comma-separated: torch, keras")
    args = parser.parse_args()
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="brainmri-bench-"))
    try:
        data = workdir / "data"
        # The same variables the app reads, aimed at throw-away places before the settings are first read.
        os.environ.update(
            DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
            UPLOAD_DIR=str(workdir / "scans"),
            ARTIFACT_DIR=str(workdir / "artifacts"),
            ALLOWED_DATA_ROOTS=str(data),
        )
        get_settings.cache_clear()
        settings = get_settings()
        from db.migrate import upgrade_to_head
        from models.inference.threads import cap_threads

        cap_threads(settings.torch_threads, settings.tf_threads)
        upgrade_to_head(settings.database_url)
        origin = build_folder(data / "batch", args.images)
        for line in register_models(frameworks, workdir):
            print(line)

        from db.jobs import create_job, get_job
        from db.session import session_scope
        from services.batch_input import folder_source
        from worker.batch import run_batch_job
        from worker.jobs import run_job
        from worker.tasks import batch_predict

        params = {**folder_source(str(data / "batch"), settings=settings), "patient_mode": "none", "patient_mrn": None}
        with session_scope() as session:
            job_id = create_job(session=session, kind="batch", params=params).id
        started, cpu_started = time.perf_counter(), time.process_time()
        run_job(batch_predict, job_id, run_batch_job)
        total_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        with session_scope() as session:
            job = get_job(session=session, job_id=job_id)
        if job.status != "succeeded":
            print(f"the job {job.status}: {job.error}")
            return 1
        result = job.result
        accuracy = ", ".join(f"{fw} {m['accuracy']:.1%}" for fw, m in result["metrics"].items()) or "n/a"
        print(
            f"folder: {args.images} images, {origin}; done {result['done']}, errors {result['error']}; "
            f"accuracy {accuracy}"
        )
        print()
        # CPU seconds say what the job costs whatever else the machine is doing; wall seconds depend on that.
        print(
            "| images | models | threads (torch/tf) | total s (incl. model loading) | CPU s | images/s (predicting) |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {result['done']} | {' + '.join(frameworks)} | {settings.torch_threads}/{settings.tf_threads} "
            f"| {total_s:.1f} | {cpu_s:.1f} | {result['images_per_s']:.1f} |"
        )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
