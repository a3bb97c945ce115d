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


def class_label(value: str) -> str:
    """The name people read for a tumor class ("No tumor", not notumor); any other text comes back as it is."""
    return TumorClass(value).label if value in CLASSES else value


class Framework(StrEnum):
    TORCH = "torch"
    KERAS = "keras"

    @property
    def label(self) -> str:
        return _FRAMEWORK_LABELS[self]

    @property
    def heatmap(self) -> str:
        """The method behind its heatmap: HiResCAM suits the CNN's Flatten head; MobileNetV2's last convolution is
        4 x 4, so its map comes from hiding parts of the image (models/inference/predictor.py `occlusion_map`)."""
        return _HEATMAP_METHODS[self]


_FRAMEWORK_LABELS = {Framework.TORCH: "Custom CNN (PyTorch)", Framework.KERAS: "MobileNetV2 (Keras)"}
_HEATMAP_METHODS = {Framework.TORCH: "HiResCAM", Framework.KERAS: "Occlusion"}
FRAMEWORKS: tuple[str, ...] = tuple(f.value for f in Framework)


def framework_label(value: str) -> str:
    """The name people read for a framework's model; any other text comes back as it is."""
    return Framework(value).label if value in FRAMEWORKS else value


class ModelFileRole(StrEnum):
    """A file beside a model file that its answers depend on, recorded with the version by its sha256."""

    ONNX = "onnx"  # the ONNX export predictions run on
    ONNX_INT8 = "onnx_int8"  # the same with the CNN's large Linear layer in int8 (ONNX_INT8_CNN)
    ONNX_HEATMAP = "onnx_heatmap"  # the CNN's heatmap graph
    SIDECAR = "sidecar"  # <model>.json: preprocessing, temperature, the run's record
    OOD_STATS = "ood_stats"  # the brain-MRI check's statistics
    OOD_REPORT = "ood_report"  # what the check was measured to catch
    PAIR_REPORT = "pair_report"  # the rule of the two models' one answer, its temperature and review threshold

    @property
    def label(self) -> str:
        return _MODEL_FILE_LABELS[self]


_MODEL_FILE_LABELS = {
    ModelFileRole.ONNX: "ONNX export",
    ModelFileRole.ONNX_INT8: "int8 ONNX export",
    ModelFileRole.ONNX_HEATMAP: "heatmap ONNX export",
    ModelFileRole.SIDECAR: "sidecar",
    ModelFileRole.OOD_STATS: "out-of-distribution statistics",
    ModelFileRole.OOD_REPORT: "out-of-distribution report",
    ModelFileRole.PAIR_REPORT: "pair report",
}


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES: tuple[str, ...] = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)
# A training run goes through the same states as the job that runs it.
RunStatus = JobStatus


class TrainingStep(StrEnum):
    """What a training run does after its last epoch; its job's message names the step under way."""

    CALIBRATING = "calibrating"
    FITTING_CHECK = "fitting the check"
    EXPORTING = "exporting"

    @property
    def message(self) -> str:
        return _STEP_MESSAGES[self]


_STEP_MESSAGES = {
    TrainingStep.CALIBRATING: "Calibrating the probabilities and scoring the final model on the validation images…",
    TrainingStep.FITTING_CHECK: "Fitting the check that an image is a brain MRI slice…",
    TrainingStep.EXPORTING: "Exporting the model for the app's fast predictions…",
}


class JobKind(StrEnum):
    TRAIN = "train"
    BATCH = "batch"
    SELFCHECK = "selfcheck"
    SERIES = "series"  # predict a DICOM series and give its answer
    SEND = "send"  # send a series' results to the PACS as DICOM


class ReadLabel(StrEnum):
    """A clinician's read of a scan: one of the tumor classes, or that the image cannot be assessed."""

    GLIOMA = "glioma"
    MENINGIOMA = "meningioma"
    NOTUMOR = "notumor"
    PITUITARY = "pituitary"
    NOT_ASSESSABLE = "not_assessable"

    @property
    def label(self) -> str:
        if self is ReadLabel.NOT_ASSESSABLE:
            return "Not assessable"
        return TumorClass(self.value).label


READ_LABELS: tuple[str, ...] = tuple(r.value for r in ReadLabel)


class FlagReason(StrEnum):
    """Why a scan awaiting a read is flagged in the review queue, most urgent first; NONE when it is not."""

    REFUSED = "refused"
    DISAGREE = "disagree"
    LOW_CONFIDENCE = "low_confidence"
    CONFLICTING_READS = "conflicting_reads"
    NONE = "none"

    @property
    def label(self) -> str:
        return _FLAG_LABELS[self]


_FLAG_LABELS = {
    FlagReason.REFUSED: "not a brain MRI slice, by the check",
    FlagReason.DISAGREE: "the models disagree",
    FlagReason.LOW_CONFIDENCE: "low confidence",
    FlagReason.CONFLICTING_READS: "earlier reviews conflict",
    FlagReason.NONE: "not flagged",
}


class ScanSource(StrEnum):
    UPLOAD = "upload"
    BATCH = "batch"


class SeriesSource(StrEnum):
    """How a DICOM series reached the system."""

    DIMSE = "dimse"  # sent to the DICOM listener (C-STORE)
    DICOMWEB = "dicomweb"  # pulled from the PACS by WADO-RS
    UPLOAD = "upload"  # a multi-frame file, a zip or a folder of one series uploaded by hand


class SeriesStatus(StrEnum):
    RECEIVING = "receiving"  # instances arriving; complete after DICOM_SERIES_IDLE_S without a new one
    QUEUED = "queued"  # complete, waiting for or in its prediction job
    ANSWERED = "answered"  # every slice predicted or refused, the series answer given
    FAILED = "failed"  # its prediction job failed; the job's record says why


class SliceStatus(StrEnum):
    RECEIVED = "received"  # staged, not predicted yet
    DONE = "done"  # predicted and saved as a scan
    SKIPPED = "skipped"  # not a brain MRI slice by the check, or its scan was deleted
    ERROR = "error"  # could not be decoded


class SendStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    SENT = "sent"
    FAILED = "failed"  # attempts ran out: the objects are kept, and the job can be run again


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
    USER_UNLOCKED = "user_unlocked"
    LIST_VIEWED = "list_viewed"
    REFUSED = "refused"
    DICOM_REFUSED = "dicom_refused"  # an association or instance the DICOM listener refused
    SERIES_RECEIVED = "series_received"  # a series complete at the listener, queued for prediction
    SERIES_QUEUED = "series_queued"  # a series sent to prediction by a person (PACS page, upload)
    SERIES_VIEWED = "series_viewed"
    PACS_SEARCHED = "pacs_searched"
    RESULTS_SENT = "results_sent"  # a series' report and captures delivered to the PACS
    PATIENT_MERGED = "patient_merged"
    SCAN_ASSIGNED = "scan_assigned"


class RetryLater(Exception):
    """Work that cannot be done now (the PACS it sends to is down) and is tried again after `delay_s`; the message,
    with the time of the next try, is what its job's record shows meanwhile."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class SessionEnd(StrEnum):
    """Why a signed-in session ended; each one ends it in every tab at once."""

    SIGNED_OUT = "signed_out"
    IDLE = "idle"  # no activity for SESSION_IDLE_MINUTES
    EXPIRED = "expired"  # SESSION_MAX_HOURS after its sign-in
    DISABLED = "disabled"
    ROLE_CHANGED = "role_changed"
    PASSWORD_RESET = "password_reset"


class NotAllowed(UserError):
    """The signed-in user's role may not do this; the message says what was refused."""
