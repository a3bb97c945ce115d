"""The one reader of the environment and `.env`: every tunable of the system lives here."""

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
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

    # Where the database lives; SQLite by default, PostgreSQL when a postgresql+psycopg:// URL is given. The app
    # and the workers connect with this URL; migrations with migration_database_url when it is set (on PostgreSQL
    # the owner of the tables, while database_url's role may only insert into and read the audit log).
    database_url: str = f"sqlite:///{ROOT / 'var' / 'brainmri.db'}"
    migration_database_url: str | None = None
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
    # The periodic sweep removes scan files no row refers to once they are this old, and the unpacked zips of
    # jobs that are over (a failed or cancelled one can be re-run until then) after `keep_uploads_days`.
    orphan_grace_s: int = Field(default=3600, ge=60)
    keep_uploads_days: int = Field(default=7, ge=0)
    # Sign-in: a session idle this long is signed out; a user name is refused for `signin_lockout_s` after
    # `signin_max_failures` failures in a row, and a client address after `client_max_failures` in that time.
    session_idle_minutes: int = Field(default=30, ge=1)
    # However active, a session ends this long after its sign-in.
    session_max_hours: int = Field(default=12, ge=1)
    signin_max_failures: int = Field(default=5, ge=1)
    signin_lockout_s: int = Field(default=900, ge=1)
    client_max_failures: int = Field(default=20, ge=1)
    # An admin's name is never locked: past signin_max_failures, each further failure from one address doubles
    # that address's wait before its next try for that name, up to this.
    signin_max_delay_s: int = Field(default=300, ge=1)
    # Addresses of the reverse proxies whose X-Forwarded-For is believed (comma-separated IPs or networks);
    # empty: none, the address is the socket's.
    forwarded_allow_ips: str = ""
    # Keys the hashes of user names nobody has and of browser session ids in the audit log. Unset: the random
    # key that migrating the database stored in it.
    secret_key: SecretStr | None = None
    # The clinic's time zone: every time the app shows is in it (stored times are UTC).
    time_zone: str = "UTC"

    @field_validator("allowed_data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        # Accept "a:b:c" as well as a JSON list, like PATH.
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else [p for p in value.split(":") if p]
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"TIME_ZONE {value!r} is not a time zone name such as Europe/Paris") from exc
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in (v.strip() for v in value.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError as exc:
                    raise ValueError(f"FORWARDED_ALLOW_IPS: {item!r} is not an IP address or network") from exc
        return value

    @property
    def max_request_mb(self) -> int:
        """The largest request body the web server reads: the largest file any page takes."""
        return max(self.max_upload_mb, self.max_zip_mb)

    @property
    def migration_url(self) -> str:
        return self.migration_database_url or self.database_url

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
