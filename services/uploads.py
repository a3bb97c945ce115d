"""Scans uploaded on the Diagnose page: each checked to be a brain MRI slice, answered by every active model, the
answers audited once, and saved with their audit entries to a patient's record in one transaction."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from db.runs import get_active_model
from db.scans import validate_mrn
from db.session import read_scope, session_scope
from domain import FRAMEWORKS, AuditAction, ScanSource, UserError, class_label, framework_label
from models.data.imaging import DecodedImage
from services.auth import Actor, audit, require_signed_in
from services.diagnosis import (
    CombinedAnswer,
    ModelResult,
    PairRule,
    Review,
    combined_answer,
    model_result,
    review,
    save_scan_with_predictions,
    versions_rule,
)
from services.ood import OodGate, OodVerdict, header_verdicts


@dataclass(frozen=True)
class ActiveModel:
    framework: str
    version_id: int
    name: str
    artifact_path: str
    sha256: str

    @property
    def label(self) -> str:
        return framework_label(self.framework)


def active_models() -> list[ActiveModel]:
    """The model clinicians use for each framework that has one, in FRAMEWORKS order."""
    with read_scope() as session:
        versions = [get_active_model(session=session, framework=fw) for fw in FRAMEWORKS]
        return [ActiveModel(v.framework, v.id, v.name, v.artifact_path, v.sha256) for v in versions if v is not None]


@dataclass(frozen=True)
class Upload:
    name: str
    decoded: DecodedImage


class Answers(Protocol):
    """Where the check's verdicts and the models' probabilities come from (the app keeps them per image, see
    ui.predictors); images go in as (sha256, RGB) pairs."""

    def verdicts(self, gate: OodGate, images: Sequence[tuple[str, np.ndarray]]) -> list[OodVerdict]: ...

    def probabilities(self, model: ActiveModel, images: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Analysis:
    name: str
    decoded: DecodedImage
    results: list[ModelResult]  # none for an image the check flagged, until its answer is asked for
    review: Review
    ood: OodVerdict | None = None  # None where no check is fitted for the active CNN
    rule: PairRule | None = None  # how the pair's answers make one and when it is flagged, where a report applies

    @property
    def answer(self) -> CombinedAnswer | None:
        """The models' one answer (services.diagnosis.combined_answer)."""
        return combined_answer(self.results, self.rule)

    @property
    def refused(self) -> bool:
        """The check says it is not a brain MRI slice: its answer is hidden unless asked for, and never saved."""
        return self.ood is not None and self.ood.flagged

    @property
    def audit_key(self) -> str:
        """What one audit entry of this analysis stands for: the image's answers, or its refusal."""
        return self.decoded.sha256 if self.results else f"{self.decoded.sha256}:refused"


def analyse(
    uploads: Sequence[Upload],
    models: Sequence[ActiveModel],
    *,
    threshold: float,
    gate: OodGate | None,
    answers: Answers,
    shown_anyway: Collection[str] = (),
) -> list[Analysis]:
    """The check first, for all images in one pass; then each model answers, in one batch, the images the check
    let through and those whose answer the person asked to see anyway (`shown_anyway`: their sha256s)."""
    images = [(u.decoded.sha256, u.decoded.rgb) for u in uploads]
    # Without the check's statistics a DICOM file's header still says whether it is an MR image.
    verdicts = header_verdicts([u.decoded.modality for u in uploads])
    if gate is not None:
        checked = answers.verdicts(gate, images)
        verdicts = [v.with_modality(u.decoded.modality) for v, u in zip(checked, uploads, strict=True)]
    answered = sorted(
        i
        for i, (verdict, upload) in enumerate(zip(verdicts, uploads, strict=True))
        if verdict is None or not verdict.flagged or upload.decoded.sha256 in shown_anyway
    )
    probabilities = {
        m.framework: dict(zip(answered, answers.probabilities(m, [images[i] for i in answered]), strict=True))
        for m in models
    }
    rule = versions_rule({m.framework: m.version_id for m in models})
    analyses = []
    for position, (upload, verdict) in enumerate(zip(uploads, verdicts, strict=True)):
        if verdict is not None and position not in answered:  # flagged, its answer not asked for
            analyses.append(Analysis(upload.name, upload.decoded, [], Review(True, [verdict.reason]), verdict, rule))
            continue
        results = [
            model_result(
                framework=m.framework, model_version_id=m.version_id, probabilities=probabilities[m.framework][position]
            )
            for m in models
        ]
        analyses.append(Analysis(upload.name, upload.decoded, results, review(results, threshold, rule), verdict, rule))
    return analyses


def audit_predictions(actor: Actor | None, analyses: Sequence[Analysis], *, already: Collection[str] = ()) -> set[str]:
    """One audit entry per image answered (or refused) whose `audit_key` is not in `already`, in one transaction;
    returns the keys audited now. A flagged image whose answer is shown anyway gets an entry of its own."""
    fresh = [a for a in analyses if a.audit_key not in already]
    if not fresh:
        return set()
    require_signed_in(actor, "analyse scans")
    with session_scope() as session:
        for a in fresh:
            labels = ", ".join(f"{r['framework']}: {class_label(r['label'])} {r['confidence']:.0%}" for r in a.results)
            if a.refused:
                shown = f"{labels}, shown although " if a.results else "no tumor class shown: "
                labels = f"{shown}{a.ood.reason}"  # type: ignore[union-attr]
            detail = f"{a.name}: {labels}"
            audit(
                actor, AuditAction.PREDICTION, target=f"image {a.decoded.sha256[:16]}", detail=detail, session=session
            )
    return {a.audit_key for a in fresh}


@dataclass(frozen=True)
class Saved:
    """What saving a set of analyses did: its scans' ids by image sha256, and what was new."""

    mrn: str
    scan_ids: dict[str, int]
    images: int  # the analyses saved, an image given twice counted twice
    new_scans: int
    new_predictions: int

    @property
    def already_there(self) -> int:
        return self.images - self.new_scans


def save_analyses(actor: Actor | None, analyses: Sequence[Analysis], *, mrn: str, threshold: float) -> Saved:
    """Save every analysed scan, with each model's prediction and an audit entry, to the patient's record, all in
    one transaction; a scan already there is not saved twice. An image the check refused is never saved."""
    require_signed_in(actor, "save scans to a record")
    try:
        mrn = validate_mrn(mrn)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    refused = [a.name for a in analyses if a.refused]
    if refused:
        raise UserError(f"Not saved: {', '.join(refused)} is not a brain MRI slice, and such images are never saved.")
    scan_ids, new_scans, new_predictions = {}, 0, 0
    with session_scope() as session:
        for a in analyses:
            outcome = save_scan_with_predictions(
                session=session,
                decoded=a.decoded,
                patient_mrn=mrn,
                source=ScanSource.UPLOAD,
                results=a.results,
                threshold=threshold,
                original_name=a.name,
                rule=a.rule,
            )
            scan_ids[a.decoded.sha256] = outcome.scan.id
            audit(
                actor,
                AuditAction.UPLOAD,
                target=f"scan {outcome.scan.id}",
                patient_mrn=mrn,
                detail=f"{a.name} saved to the record with {len(a.results)} prediction(s)",
                session=session,
            )
            new_scans += outcome.scan_created
            new_predictions += outcome.predictions_created
    return Saved(mrn, scan_ids, len(analyses), new_scans, new_predictions)
