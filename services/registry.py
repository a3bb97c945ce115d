"""Choosing the model clinicians get, and handing out model files: admins only, each step audited.

A model that would serve clinicians worse is made active only with a typed reason, kept in the audit log beside
what it costs: a validation accuracy below the active version's on the same images, or below
MIN_PROMOTE_ACCURACY, or a model without calibration or (the CNN) without the brain-MRI check's statistics.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.runs import activate_model_version, get_active_model, get_model_version
from db.schema import ModelVersion
from db.session import read_scope, session_scope
from domain import CLASSES, AuditAction, Framework, UserError, class_label, framework_label
from models.evaluation.ood import OodUnavailable, load_stats
from services.auth import Actor, audit, require_admin
from services.model_card import version_facts
from services.model_card_document import nested, same_validation
from settings import get_settings

MIN_REASON_CHARS = 10


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def chance_level(val: Mapping[str, Any]) -> tuple[str, float, int] | None:
    """(the most frequent class, its share, the number of images) of a validation report, from its confusion
    matrix: what answering that class to every image scores."""
    matrix = val.get("confusion_matrix")
    labels = val.get("labels") or list(CLASSES)
    if not matrix:
        return None
    support = [sum(row) for row in matrix]
    total = sum(support)
    if not total:
        return None
    top = max(range(len(support)), key=support.__getitem__)
    return labels[top], support[top] / total, total


def shortfalls(val: Mapping[str, Any] | None, *, floor: float | None = None) -> list[str]:
    """Why a model's validation figures make it unfit for clinicians, as sentences; empty when they do not.

    At chance means no better than answering the most frequent class to every image, within two standard
    errors of that share on this many images.
    """
    floor = get_settings().min_promote_accuracy if floor is None else floor
    accuracy = (val or {}).get("accuracy")
    if not isinstance(accuracy, int | float):
        return ["it has no recorded validation accuracy"]
    reasons = []
    chance = chance_level(val or {})
    if chance is not None:
        name, share, images = chance
        margin = 2 * math.sqrt(share * (1 - share) / images)
        if accuracy <= share + margin:
            reasons.append(
                f"its validation accuracy, {_pct(accuracy)}, is at chance: answering {class_label(name)} to every "
                f"one of its {images} validation images scores {_pct(share)}"
            )
    if accuracy < floor:
        reasons.append(
            f"its validation accuracy, {_pct(accuracy)}, is below the {_pct(floor)} a model needs to be used "
            "(MIN_PROMOTE_ACCURACY)"
        )
    return reasons


@dataclass(frozen=True)
class ActivationCheck:
    """What making a version active would cost clinicians, in sentences; a reason is needed when it costs any."""

    version_id: int
    name: str
    framework: str
    costs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why

    @property
    def needs_reason(self) -> bool:
        return bool(self.costs)


def _costs(version: ModelVersion, active: ModelVersion | None) -> tuple[list[str], list[str]]:
    facts = version_facts(version)
    val = nested(facts.record.metrics, "val") or {}
    costs = shortfalls(val)
    notes = []
    if active is not None and active.id != version.id:
        theirs = version_facts(active)
        mine_acc, their_acc = val.get("accuracy"), nested(theirs.record.metrics, "val", "accuracy")
        if not same_validation(facts.record, theirs.record):
            notes.append(
                f"It was not scored on the validation images of the active version ({active.name}), so their "
                "accuracies are not compared."
            )
        elif isinstance(mine_acc, int | float) and isinstance(their_acc, int | float) and mine_acc < their_acc:
            costs.append(
                f"it scores {_pct(mine_acc)} on the validation images where the active version ({active.name}) "
                f"scores {_pct(their_acc)}: {100 * (their_acc - mine_acc):.1f} points lower"
            )
    if not isinstance(nested(val, "calibration", "temperature"), int | float):
        costs.append(
            "it has no calibration: its probabilities are not temperature-scaled, so they may overstate or "
            "understate how sure it is"
        )
    if version.framework == Framework.TORCH:
        try:
            load_stats(version.artifact_path, version.sha256)
        except OodUnavailable as exc:
            costs.append(
                "it has no statistics for the check that an image is a brain MRI slice, so any image would get a "
                f"tumor class ({exc})"
            )
    return costs, notes


def activation_check(*, version_id: int) -> ActivationCheck:
    """What making this version active would cost, against the active version of its framework."""
    with read_scope() as session:
        version = get_model_version(session=session, version_id=version_id)
        if version is None:
            raise UserError(f"Model version {version_id} does not exist.")
        active = get_active_model(session=session, framework=version.framework)
        costs, notes = _costs(version, active)
        return ActivationCheck(version.id, version.name, version.framework, costs, notes)


def activate(actor: Actor | None, *, version_id: int, rollback: bool = False, reason: str | None = None) -> str:
    """Make a version active (promotion, or `rollback` to the previous one); returns the version's name.

    What it costs is judged again here, at the moment it acts: when it costs anything, `reason` (at least
    MIN_REASON_CHARS characters) is required and the audit entry keeps both.
    """
    require_admin(actor, "roll back models" if rollback else "promote models")
    reason = " ".join((reason or "").split())
    with session_scope() as session:
        version = get_model_version(session=session, version_id=version_id)
        if version is None:
            raise UserError(f"Model version {version_id} does not exist.")
        before = get_active_model(session=session, framework=version.framework)
        costs, _ = _costs(version, before)
        if costs and len(reason) < MIN_REASON_CHARS:
            raise UserError(
                f"{version.name} (version {version.id}) was not made active: {'; '.join(costs)}. Making it the "
                f"active {framework_label(version.framework)} model needs a reason of at least {MIN_REASON_CHARS} "
                "characters."
            )
        activate_model_version(session=session, version_id=version_id)
        detail = f"{version.framework}: {version.name}"
        if before is not None and before.id != version.id:
            detail += f", replacing version {before.id} ({before.name})"
        if costs:
            detail += f"; accepted although {'; '.join(costs)}; reason: {reason}"
        action = AuditAction.MODEL_ROLLED_BACK if rollback else AuditAction.MODEL_PROMOTED
        audit(actor, action, target=f"model version {version_id}", detail=detail, session=session)
        return version.name


def model_file(actor: Actor | None, *, version_id: int) -> bytes:
    """The bytes of a version's model file, for a download (audited)."""
    require_admin(actor, "download model files")
    with session_scope() as session:
        version = get_model_version(session=session, version_id=version_id)
        if version is None:
            raise UserError(f"Model version {version_id} does not exist.")
        path = Path(version.artifact_path)
        audit(
            actor, AuditAction.MODEL_DOWNLOADED, target=f"model version {version_id}", detail=str(path), session=session
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"The model file {path} cannot be read: {exc.strerror}.") from exc
