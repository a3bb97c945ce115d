"""The one reader of the environment and `.env`: every tunable of the system lives here."""

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent
SAMPLE_DIR = ROOT / "data" / "sample"
DEFAULT_WEIGHTS_DIR = ROOT / "models" / "weights"
# Weights shipped with the repository, registered and activated on start-up when a framework has no model.
DEFAULT_MODEL_FILES = {
    "torch": DEFAULT_WEIGHTS_DIR / "cnn_default.pth",
    "keras": DEFAULT_WEIGHTS_DIR / "mobilenetv2_default.keras",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=ROOT / ".env", extra="ignore")

    # Where the database lives; SQLite by default, PostgreSQL when a postgresql+psycopg:// URL is given.
    database_url: str = f"sqlite:///{ROOT / 'var' / 'brainmri.db'}"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Trained models, uploaded scans (addressed by sha256) and generated reports.
    artifact_dir: Path = ROOT / "var" / "artifacts"
    upload_dir: Path = ROOT / "var" / "scans"
    # Server-side folders (batch prediction, training data) must live under one of these.
    allowed_data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [SAMPLE_DIR, (ROOT.parent / "shared" / "data").resolve()]
    )
    # Threads per process for each framework; two processes on 2 cores must not starve each other.
    torch_threads: int = 1
    tf_threads: int = 1
    # Predictions and heatmaps run on ONNX Runtime ("onnx", from exports made beside each model file) or in the
    # model's own framework ("framework"). ONNX Runtime gets onnx_threads per model.
    inference_backend: Literal["onnx", "framework"] = "onnx"
    onnx_threads: int = Field(default=1, ge=1)
    # The CNN's large Linear layer in int8 on ONNX Runtime: validation accuracy unchanged (93.00 %), answers a
    # few hundredths from the float model's, so off unless asked for (README, Benchmarks).
    onnx_int8_cnn: bool = False
    worker_concurrency: int = 2
    # A prediction below this confidence is flagged for review: the lowest threshold whose unflagged
    # validation images are right at least 99 % of the time with the shipped pair (models/weights/pair.json).
    confidence_threshold: float = 0.7
    max_upload_mb: int = 50
    max_zip_mb: int = 500
    max_zip_files: int = 20000
    # A brain slice is rarely past 1024²: 4096² leaves room and keeps one decode's memory to tens of MB.
    max_image_pixels: int = 4096 * 4096
    # Uploaded and batch files are decoded in child processes (models/data/sandbox.py): each file may use this
    # much processor time and address space and take this long, else it is refused in words. `decode_processes`
    # warm children per app or worker process (about 60 MB each), started as callers overlap.
    decode_cpu_s: float = Field(default=30.0, gt=0)
    decode_memory_mb: int = Field(default=1536, ge=256)
    decode_timeout_s: float = Field(default=60.0, gt=0)
    decode_processes: int = Field(default=2, ge=1)
    # Decoded uploads and heatmaps kept for the app's redraws (at most 1024 px a side, see models/data/imaging.py), in
    # all sessions together; past this the least recently used are dropped and made again when next needed.
    image_cache_mb: int = Field(default=256, ge=1)
    # Files analysed together on the Diagnose page; more are refused with a message (a batch job takes a folder).
    max_files_per_upload: int = Field(default=20, ge=1)
    # MobileNetV2 ImageNet weights (no-top .h5). Empty: the Keras cache under ~/.keras/models.
    mobilenet_weights_path: Path | None = None
    # How long a write waits for another process's SQLite write lock before it fails with a message.
    db_busy_timeout_s: float = Field(default=30.0, gt=0)
    # A running job with no heartbeat for this long is settled as failed.
    job_stale_after_s: int = 300
    # How often each worker's beat sends the sweep that settles or sends again the jobs of dead workers, sends
    # again the queued jobs Redis lost, and removes files nothing refers to.
    sweep_every_s: float = Field(default=60.0, ge=1)
    # The periodic sweep removes scan files no row refers to once they are this old, and the unpacked zips of
    # jobs that are over (a failed or cancelled one can be re-run until then) after `keep_uploads_days`.
    orphan_grace_s: int = Field(default=3600, ge=60)
    keep_uploads_days: int = Field(default=7, ge=0)
    # Sign-in: a session idle this long is signed out; a user name is refused for `signin_lockout_s` after
    # `signin_max_failures` failures in a row, and a client address after `client_max_failures` in that time.
    session_idle_minutes: int = Field(default=30, ge=1)
    signin_max_failures: int = Field(default=5, ge=1)
    signin_lockout_s: int = Field(default=900, ge=1)
    client_max_failures: int = Field(default=20, ge=1)

    @field_validator("allowed_data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        # Accept "a:b:c" as well as a JSON list, like PATH.
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else [p for p in value.split(":") if p]
        return value

    @field_validator("confidence_threshold")
    @classmethod
    def _threshold_in_range(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("CONFIDENCE_THRESHOLD must be between 0 and 1")
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
