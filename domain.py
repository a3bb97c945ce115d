"""The vocabulary every layer shares: tumor classes, frameworks, statuses and sources.

StrEnum members are plain strings too (`Framework.TORCH == "torch"`), so they go into the database, JSON
and URLs unchanged; the schema constrains its columns to these values.
"""

from enum import StrEnum


class UserError(Exception):
    """A failure a person caused and can fix (a bad folder, a missing file); its message is shown as written."""


DISCLAIMER = (
    "Decision support only. These results come from machine-learning models and are not a diagnosis; "
    "a qualified clinician must interpret every scan and confirm every finding."
)
# Both networks see the scan as RGB at this side; MobileNetV2 may resize further inside itself.
INPUT_SIZE = 224


class TumorClass(StrEnum):
    GLIOMA = "glioma"
    MENINGIOMA = "meningioma"
    NOTUMOR = "notumor"
    PITUITARY = "pituitary"

    @property
    def label(self) -> str:
        return "No tumor" if self is TumorClass.NOTUMOR else self.value.capitalize()


# The networks' output order: index i of a probability vector is CLASSES[i].
CLASSES: tuple[str, ...] = tuple(c.value for c in TumorClass)  # plain str: they go into pickles and JSON


class Framework(StrEnum):
    TORCH = "torch"
    KERAS = "keras"

    @property
    def label(self) -> str:
        return _FRAMEWORK_LABELS[self]

    @property
    def heatmap(self) -> str:
        """The method behind its heatmap: HiResCAM suits the CNN's Flatten head, Grad-CAM MobileNetV2's pooling."""
        return _HEATMAP_METHODS[self]


_FRAMEWORK_LABELS = {Framework.TORCH: "Custom CNN (PyTorch)", Framework.KERAS: "MobileNetV2 (Keras)"}
_HEATMAP_METHODS = {Framework.TORCH: "HiResCAM", Framework.KERAS: "Grad-CAM"}
FRAMEWORKS: tuple[str, ...] = tuple(f.value for f in Framework)


def framework_label(value: str) -> str:
    """The name people read for a framework's model; any other text comes back as it is."""
    return Framework(value).label if value in FRAMEWORKS else value


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES: tuple[str, ...] = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)
# A training run goes through the same states as the job that runs it.
RunStatus = JobStatus


class JobKind(StrEnum):
    TRAIN = "train"
    BATCH = "batch"
    SELFCHECK = "selfcheck"


class ReviewStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CORRECTED = "corrected"


class ScanSource(StrEnum):
    UPLOAD = "upload"
    BATCH = "batch"


class BatchItemStatus(StrEnum):
    DONE = "done"
    ERROR = "error"
    SKIPPED = "skipped"


class Role(StrEnum):
    ADMIN = "admin"  # everything a clinician does, plus training, promotion, deletes and user management
    CLINICIAN = "clinician"  # diagnose, batch, history and reviews


class AuditAction(StrEnum):
    """What the audit log records; who, which record, when and from which session go beside it."""

    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_THROTTLED = "sign_in_throttled"
    SIGN_OUT = "sign_out"
    SESSION_EXPIRED = "session_expired"
    UPLOAD = "upload"
    PREDICTION = "prediction"
    PATIENT_VIEWED = "patient_viewed"
    SCAN_VIEWED = "scan_viewed"
    REVIEW = "review"
    EXPORT = "export"
    SCAN_DELETED = "scan_deleted"
    PATIENT_DELETED = "patient_deleted"
    BATCH_STARTED = "batch_started"
    TRAINING_STARTED = "training_started"
    JOB_CANCELLED = "job_cancelled"
    JOB_REQUEUED = "job_requeued"
    MODEL_PROMOTED = "model_promoted"
    MODEL_ROLLED_BACK = "model_rolled_back"
    MODEL_DOWNLOADED = "model_downloaded"
    USER_CREATED = "user_created"
    USER_DISABLED = "user_disabled"
    USER_ENABLED = "user_enabled"
    PASSWORD_RESET = "password_reset"
    ROLE_CHANGED = "role_changed"
    REFUSED = "refused"


class NotAllowed(UserError):
    """The signed-in user's role may not do this; the message says what was refused."""
