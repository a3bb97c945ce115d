"""The one reader of the environment and `.env`: every tunable of the system lives here."""

import ipaddress
import json
import re
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
    # Where one model answers, or two without their pair report: a prediction below this confidence is flagged
    # for review (two models with their pair report are flagged by the threshold it records, models/weights/pair.json).
    confidence_threshold: float = 0.7
    # A model scoring below this validation accuracy is "not usable": its run says so, and making it the active
    # one asks for a reason (audited).
    min_promote_accuracy: float = Field(default=0.80, ge=0.0, le=1.0)
    max_upload_mb: int = Field(default=50, ge=1)
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
    # Diagnose results not saved to a record are kept server-side for their user this long, so that a reload
    # or a lost connection does not lose them (services/unsaved.py).
    unsaved_keep_hours: int = Field(default=24, ge=1)
    # MobileNetV2 ImageNet weights (no-top .h5). Empty: the Keras cache under ~/.keras/models.
    mobilenet_weights_path: Path | None = None
    # How long a write waits for another process's SQLite write lock before it fails with a message.
    db_busy_timeout_s: float = Field(default=30.0, gt=0)
    # A running job writes a heartbeat this often; one that missed two and whose worker answers no ping is sent
    # again to another worker.
    heartbeat_interval_s: float = Field(default=15.0, gt=0)
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
    # However active, a session ends this long after its sign-in.
    session_max_hours: int = Field(default=12, ge=1)
    signin_max_failures: int = Field(default=5, ge=1)
    signin_lockout_s: int = Field(default=900, ge=1)
    client_max_failures: int = Field(default=20, ge=1)
    # The DICOM listener (`make dicom-listener`): a C-STORE SCP for MR series from scanners and the PACS. It
    # listens on 127.0.0.1 unless told otherwise, like the app; DICOM_ALLOWED_AETS (comma-separated) limits
    # which calling AE titles may send (empty: any).
    dicom_ae_title: str = "BRAINMRI"
    dicom_port: int = Field(default=11112, ge=1, le=65535)
    dicom_bind_address: str = "127.0.0.1"
    dicom_allowed_aets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A series is complete, and goes to the prediction queue, after this long without a new instance.
    dicom_series_idle_s: float = Field(default=10.0, gt=0)
    dicom_max_series_slices: int = Field(default=2000, ge=1)
    # Received instances wait here until their series is predicted; results wait here until delivered.
    dicom_spool_dir: Path = ROOT / "var" / "dicom"
    # Where results go back as DICOM: "AE@host:port" for C-STORE; else by STOW-RS to DICOMWEB_URL when
    # DICOMWEB_STOW is true; else nowhere (answers stay in the app).
    dicom_destination: str | None = None
    dicomweb_url: str | None = None
    dicomweb_stow: bool = False
    # DICOMweb authentication: a bearer token, or a user name and password (basic).
    dicomweb_token: str | None = None
    dicomweb_username: str | None = None
    dicomweb_password: str | None = None
    dicomweb_timeout_s: float = Field(default=30.0, gt=0)
    # A failed send is tried again after dicom_send_retry_s, doubling each time up to dicom_send_retry_max_s,
    # dicom_send_attempts times in all; the objects are kept after that, and the job can be run again.
    dicom_send_retry_s: float = Field(default=30.0, gt=0)
    dicom_send_retry_max_s: float = Field(default=3600.0, gt=0)
    dicom_send_attempts: int = Field(default=30, ge=1)
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

    @field_validator("dicom_allowed_aets", mode="before")
    @classmethod
    def _split_aets(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else [a for a in value.split(",") if a.strip()]
        return value

    @field_validator("dicom_ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return ae_title(value, "DICOM_AE_TITLE")

    @field_validator("dicom_allowed_aets")
    @classmethod
    def _ae_titles(cls, value: list[str]) -> list[str]:
        return [ae_title(v, "DICOM_ALLOWED_AETS") for v in value]

    @field_validator("dicom_destination")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_destination(value)
        return value.strip()

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


AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # printable ASCII without the backslash, 16 at most


def ae_title(value: str, name: str = "an AE title") -> str:
    """An AE title, trimmed; ValueError unless it is 1 to 16 printable characters (no backslash)."""
    title = value.strip()
    if not AE_TITLE.fullmatch(title):
        raise ValueError(f"{name}: {value!r} is not an AE title (1 to 16 printable ASCII characters, no backslash)")
    return title


def parse_destination(value: str) -> tuple[str, str, int]:
    """(AE title, host, port) of "AE@host:port"; ValueError with the expected form otherwise."""
    match = re.fullmatch(r"\s*([^@]+)@([^:\s]+):(\d{1,5})\s*", value)
    if match is None or not 0 < int(match[3]) < 65536:
        raise ValueError(f"DICOM_DESTINATION: {value!r} is not AE@host:port (e.g. PACS@10.0.0.5:104)")
    return ae_title(match[1], "DICOM_DESTINATION"), match[2], int(match[3])


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
