"""Diagnosis: each model's answer for a scan, the models' one answer, the rule that asks a clinician to look again,
and saving them to the patient's record. The Diagnose page, the batch job, History and the reports go through here."""

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from sqlalchemy.orm import Session

from db.model_files import pair_report_digests
from db.runs import get_model_version
from db.scans import get_or_create_patient, get_or_create_scan, upsert_prediction
from db.schema import Prediction, Scan
from db.session import read_scope
from db.storage import lock_scan_files, store_scan_file
from domain import CLASSES, Framework, framework_label
from models.data.imaging import DecodedImage
from models.inference.combination import MODEL_NAMES, Combination
from services.model_files import PAIR_NAME, PAIR_REPORT

log = logging.getLogger(__name__)


class ModelResult(TypedDict):
    """One model's answer for one image, as stored and as shown."""

    framework: str
    model_version_id: int
    label: str
    confidence: float
    probabilities: dict[str, float]


def model_result(*, framework: str, model_version_id: int, probabilities: Sequence[float] | np.ndarray) -> ModelResult:
    """A ModelResult from a probability vector in CLASSES order."""
    probs = [float(p) for p in probabilities]
    if len(probs) != len(CLASSES):
        raise ValueError(f"expected {len(CLASSES)} probabilities, got {len(probs)}")
    best = int(np.argmax(probs))
    return ModelResult(
        framework=framework,
        model_version_id=model_version_id,
        label=CLASSES[best],
        confidence=probs[best],
        probabilities=dict(zip(CLASSES, probs)),
    )


def stored_result(*, framework: str, model_version_id: int, probabilities: Mapping[str, float]) -> ModelResult:
    """A ModelResult from the probabilities a record keeps by class name."""
    return model_result(
        framework=framework,
        model_version_id=model_version_id,
        probabilities=[float(probabilities.get(c, 0.0)) for c in CLASSES],
    )


# The pair report's name of each framework's model.
PAIR_NAMES = {Framework.TORCH.value: "cnn", Framework.KERAS.value: "mobilenet"}


@dataclass(frozen=True)
class PairRule:
    """How the two models' answers make one, and when that answer asks for a review: what the pair report chose
    for them on validation (models/evaluation/pair_report.py)."""

    combination: Combination
    threshold: float  # the combined answer's confidence below which a scan is flagged
    on_disagreement: bool  # whether the models disagreeing flags it too

    @classmethod
    def of(cls, report: Mapping[str, Any]) -> "PairRule":
        """The rule a pair report records; KeyError, TypeError or ValueError where it records none."""
        chosen = report["review"]["chosen"]
        return cls(
            Combination.of(report["answer"]["rule"]), float(chosen["threshold"]), bool(chosen["on_disagreement"])
        )

    def slice_answers(self, per_model: Mapping[str, np.ndarray]) -> np.ndarray:
        """The one answer of each row (N x classes) of both models' probabilities, keyed by framework."""
        return pair_probabilities(self.combination, per_model)

    def describe(self) -> str:
        """Where the answer comes from, in words shown beside it."""
        single = self.combination.single_model
        if single:
            return f"the answer is {MODEL_NAMES[single]}'s: combining did not beat it on validation"
        return f"from {self.combination.describe()}, chosen on validation"

    def flag_rule(self) -> str:
        """When this rule flags a scan, in words."""
        disagreement = " or the models disagree" if self.on_disagreement else ""
        return f"the combined answer is less than {self.threshold:.0%} confident{disagreement}"


# Where no pair report applies to two models: their plain average, uncalibrated.
FALLBACK = Combination("average")


@dataclass(frozen=True)
class CombinedAnswer:
    """The one answer of the models for a scan, beside their own answers."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    how: str  # the rule in words


def pair_probabilities(combination: Combination, per_model: Mapping[str, np.ndarray]) -> np.ndarray:
    """`combination`'s answer for each row (N x classes) of the CNN's and MobileNetV2's probabilities, keyed by
    framework."""
    by_name = {PAIR_NAMES[framework]: probs for framework, probs in per_model.items()}
    return combination.probabilities(by_name["cnn"], by_name["mobilenet"])


def combined_answer(results: Sequence[ModelResult], rule: PairRule | None) -> CombinedAnswer | None:
    """The models' one answer: a single model's own; the pair's by `rule` (by their plain average where no pair
    report applies); None without an answer, or for models that are not one CNN and one MobileNetV2."""
    if len(results) == 1:
        r = results[0]
        return CombinedAnswer(
            r["label"], r["confidence"], r["probabilities"], f"{framework_label(r['framework'])} alone"
        )
    by_name = {PAIR_NAMES.get(r["framework"]): r for r in results}
    if len(results) != 2 or set(by_name) != set(PAIR_NAMES.values()):
        return None
    rows = {r["framework"]: np.array([[r["probabilities"][c] for c in CLASSES]]) for r in results}
    probs = pair_probabilities(rule.combination if rule else FALLBACK, rows)[0]
    best = int(probs.argmax())
    how = rule.describe() if rule else "from the plain average of both models: no pair report applies to them"
    return CombinedAnswer(CLASSES[best], float(probs[best]), dict(zip(CLASSES, map(float, probs))), how)


@dataclass(frozen=True)
class Review:
    """Whether a clinician should look again, and why, in words the page shows."""

    flagged: bool
    reasons: list[str] = field(default_factory=list)


def review(results: Sequence[ModelResult], threshold: float, rule: PairRule | None = None) -> Review:
    """Flag a scan by the pair's `rule` where one applies: the combined answer less confident than its threshold
    (or, if the rule says so, the models disagree). Otherwise when any model is less confident than `threshold`,
    or the models disagree on the class."""
    if not results:
        return Review(True, ["no model gave an answer"])
    disagree = len({r["label"] for r in results}) > 1
    answer = combined_answer(results, rule) if rule and len(results) == 2 else None
    if rule and answer:
        reasons = []
        if answer.confidence < rule.threshold:
            reasons.append(f"the combined answer is {answer.confidence:.1%} confident, below {rule.threshold:.0%}")
        if disagree and rule.on_disagreement:
            reasons.append("the models disagree")
        return Review(bool(reasons), reasons)
    reasons = [
        f"{framework_label(r['framework'])} is {r['confidence']:.0%} confident, below {threshold:.0%}"
        for r in results
        if r["confidence"] < threshold
    ]
    if disagree:
        reasons.append("the models disagree")
    return Review(bool(reasons), reasons)


@lru_cache(maxsize=8)
def pair_rule(cnn_sha256: str, mobilenet_sha256: str, report: Path = PAIR_REPORT) -> PairRule | None:
    """The rule the pair report (models/evaluation/pair_report.py) chose for these two models, or None when the report
    was made for other model files, records no rule, or is not the one recorded with them (their load refuses them
    then)."""
    try:
        data = report.read_bytes()
        with read_scope() as session:
            recorded = pair_report_digests(session=session, model_sha256s=[cnn_sha256, mobilenet_sha256])
        if recorded and hashlib.sha256(data).hexdigest() not in recorded:
            log.warning("%s is not the pair report recorded with these models; its rule is not used", report)
            return None
        pair = json.loads(data)
        models = pair["models"]
        if (models["cnn"]["sha256"], models["mobilenet"]["sha256"]) != (cnn_sha256, mobilenet_sha256):
            return None
        return PairRule.of(pair)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def versions_rule(version_ids: Mapping[str, int]) -> PairRule | None:
    """The pair rule of these model versions (framework -> version id): that of the pair report beside the CNN's
    file, where they are one CNN and one MobileNetV2 it was made for; None otherwise."""
    if set(version_ids) != set(PAIR_NAMES):
        return None
    with read_scope() as session:
        versions = {fw: get_model_version(session=session, version_id=v) for fw, v in version_ids.items()}
        files = {fw: (v.sha256, v.artifact_path) for fw, v in versions.items() if v is not None}
    if len(files) != len(PAIR_NAMES):
        return None
    (cnn_sha256, cnn_path), (mobilenet_sha256, _) = files[Framework.TORCH], files[Framework.KERAS]
    return pair_rule(cnn_sha256, mobilenet_sha256, Path(cnn_path).parent / PAIR_NAME)


def answer_rule(results: Sequence[ModelResult]) -> PairRule | None:
    """The pair rule of the versions that gave these answers (see versions_rule)."""
    return versions_rule({r["framework"]: r["model_version_id"] for r in results}) if len(results) == 2 else None


@dataclass
class SavedScan:
    scan: Scan
    predictions: list[Prediction]
    scan_created: bool
    predictions_created: int
    flagged: bool  # what the review rule said of this scan


def save_scan_with_predictions(
    *,
    session: Session,
    decoded: DecodedImage,
    patient_mrn: str | None,
    source: str,
    results: list[ModelResult],
    threshold: float,
    original_name: str,
    job_id: int | None = None,
    refusal: str | None = None,
    rule: PairRule | None = None,
) -> SavedScan:
    """Store the image once and record each model's prediction; saving the same image again adds nothing.

    `refusal`: why the brain-MRI check refused the image, kept on the scan (which then has no answers).
    The patient is matched as db.scans.get_or_create_patient does (ValueError for an id against the rule). The
    review flag is that of `review` with `threshold` and the pair's `rule`.
    """
    patient_pk = None
    if patient_mrn is not None:
        patient_pk = get_or_create_patient(session=session, mrn=patient_mrn).id
    flagged = review(results, threshold, rule).flagged
    # The file goes first, under the lock a delete takes to remove it: a committed row never points at a missing file.
    lock_scan_files(session=session)
    path = store_scan_file(data=decoded.stored_bytes, sha256=decoded.sha256, suffix=decoded.stored_suffix)
    scan, scan_created = get_or_create_scan(
        session=session,
        patient_pk=patient_pk,
        sha256=decoded.sha256,
        file_path=str(path),
        original_name=original_name[:512],
        source=source,
        job_id=job_id,
        width=decoded.width,
        height=decoded.height,
        image_format=decoded.image_format,
        modality=decoded.modality,
        study_date=decoded.study_date,
        series_description=decoded.series_description,
        note=decoded.note,
        refusal=refusal,
    )
    predictions, created = [], 0
    for result in results:
        row, new = upsert_prediction(
            session=session,
            scan_id=scan.id,
            model_version_id=result["model_version_id"],
            label=result["label"],
            probabilities=result["probabilities"],
            confidence=result["confidence"],
            needs_review=bool(flagged),
            source=source,
            job_id=job_id,
        )
        predictions.append(row)
        created += new
    return SavedScan(
        scan=scan, predictions=predictions, scan_created=scan_created, predictions_created=created, flagged=flagged
    )


RuleOf = Callable[[Sequence[ModelResult]], PairRule | None]


def answer_rules() -> RuleOf:
    """answer_rule, each pair of versions looked up once: for the many rows of one table or file."""
    memo: dict[tuple[tuple[str, int], ...], PairRule | None] = {}

    def rule_of(results: Sequence[ModelResult]) -> PairRule | None:
        key = tuple(sorted((r["framework"], r["model_version_id"]) for r in results))
        if key not in memo:
            memo[key] = answer_rule(results)
        return memo[key]

    return rule_of
