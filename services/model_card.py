"""Model cards of registered versions: gathered from the registry, the run record, the model file's
out-of-distribution statistics, the pair report beside it and its cached validation predictions (models/evaluation/confusion_examples.py), and
exported as Markdown or as a self-contained HTML page (services/templates/model_card.html)."""

import json
from pathlib import Path
from typing import Any

from db.runs import get_active_model, get_model_version
from db.schema import ModelVersion
from db.session import read_scope
from domain import DISCLAIMER, UserError
from models.data.dataset import DatasetError
from models.evaluation import confusion_examples
from models.evaluation.ood import OodUnavailable, load_stats, report_path
from models.inference.model_meta import read_sidecar
from models.training.backends import backends
from services.auth import Actor, require_admin
from services.model_card_document import (
    EXAMPLES_PER_CONFUSION,
    Confusions,
    Example,
    ModelCard,
    RunRecord,
    VersionFacts,
    build_card,
    card_markdown,
    nested,
    top_confusions,
)
from services.model_files import HEATMAPS_NAME, PAIR_NAME
from services.predictors import ModelFileProblem, loaded_predictor
from services.reports import _data_uri, _templates, _timestamp, scan_png
from settings import ROOT

__all__ = ["ModelCard", "card_html", "card_markdown", "find_confusion_examples", "version_card", "version_facts"]

THUMBNAIL_SIDE = 160


def _file_record(path: Path) -> RunRecord:
    """The run record kept with a model file: a shipped file's sidecar, or run.json in its run folder."""
    try:
        record = read_sidecar(path).get("run")
        if not record and (path.parent / "run.json").is_file():
            record = json.loads((path.parent / "run.json").read_text())
    except (OSError, ValueError, AttributeError):
        record = None
    return RunRecord.of(record)


def version_facts(version: ModelVersion) -> VersionFacts:
    """What the registry, the run and the model file's own record say about a version."""
    path = Path(version.artifact_path)
    on_file = _file_record(path)
    run = version.run
    if run is None:
        record = on_file
    else:
        record = RunRecord(
            framework=run.framework,
            preset=run.preset,
            config=run.params or {},
            fingerprint=run.dataset_fingerprint,
            dataset_path=run.dataset_path,
            test_path=run.test_path,
            pretrained=run.pretrained,
            duration_s=run.duration_s,
            metrics=run.metrics or {},
            machine=on_file.machine,
        )
    return VersionFacts(
        version_id=version.id,
        name=version.name,
        framework=version.framework,
        artifact_path=version.artifact_path,
        sha256=version.sha256,
        registered=_timestamp(version.created_at),
        is_active=version.is_active,
        file_mb=path.stat().st_size / 1e6 if path.is_file() else None,
        run_id=version.run_id,
        record=record,
    )


def _ood(version: VersionFacts) -> tuple[dict[str, Any] | None, str]:
    """The model file's out-of-distribution report, when statistics were fitted for this very file."""
    try:
        stats = load_stats(version.artifact_path, version.sha256)
    except OodUnavailable as exc:
        return None, f"No check for this file: {exc}."
    report: dict[str, Any] = {}
    try:
        report = json.loads(report_path(version.artifact_path).read_text())
    except (OSError, ValueError):
        pass
    if nested(report, "model", "sha256") != version.sha256:
        report = {}  # the report of an earlier fit; the statistics themselves are this file's
    return {"threshold": stats.threshold, **report}, ""


def _beside(version: VersionFacts, name: str, what: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON report `name` beside the model file, or None and why not (`what` names it in that sentence)."""
    path = Path(version.artifact_path).parent / name
    try:
        return json.loads(path.read_text()), ""
    except OSError:
        return None, ""
    except ValueError:
        return None, f"The {what} {path.name} beside this file cannot be read."


def _pair(version: VersionFacts) -> tuple[dict[str, Any] | None, str]:
    """The pair report beside the model file, when it was made for this very file."""
    report, problem = _beside(version, PAIR_NAME, "pair report")
    if report is None:
        return None, problem or "No pair report beside this file: the two models' one answer is their plain average."
    names = [nested(report, "models", name, "sha256") for name in ("cnn", "mobilenet")]
    if version.sha256 not in names:
        return None, "The pair report beside this file was made for other model files."
    return report, ""


def _heatmaps(version: VersionFacts) -> tuple[dict[str, Any] | None, str]:
    """The heatmap figures beside the model file (python -m models heatmap-quality), when made for this very file."""
    report, problem = _beside(version, HEATMAPS_NAME, "heatmap report")
    if report is None:
        return None, problem or "The heatmap has not been measured for this file (python -m models heatmap-quality)."
    for figures in _mapping_values(report.get("models")):
        if figures.get("sha256") == version.sha256:
            return figures, ""
    return None, "The heatmap report beside this file was made for other model files."


def _mapping_values(value: Any) -> list[dict[str, Any]]:
    return [v for v in value.values() if isinstance(v, dict)] if isinstance(value, dict) else []


def data_root(config: dict[str, Any]) -> Path | None:
    """The run's training folder; a relative one (the shipped models') is taken from the repository."""
    folder = config.get("data_dir")
    if not folder:
        return None
    path = Path(folder)
    return path if path.is_absolute() else ROOT / path


def _confusions(version: VersionFacts) -> tuple[Confusions, bool]:
    """Example images of the most frequent confusions, and whether they can be made (none cached yet)."""
    val = nested(version.record.metrics, "val") or {}
    top = top_confusions(val)
    root = data_root(version.record.config)
    if not top:
        return Confusions(), False
    cached = confusion_examples.load(version.artifact_path, version.sha256)
    if cached is None:
        if root is None:
            return Confusions(note="Example images: the run record does not say which folder it was trained on."), False
        return Confusions(
            note=(
                "Example images are not made yet: finding them predicts the validation images once and keeps the "
                "answers beside the model file."
            )
        ), True
    examples = {}
    for true, predicted, _, _ in top:
        examples[(true, predicted)] = [
            Example(file, confidence, scan_png(root / file, max_side=THUMBNAIL_SIDE) if root else None)
            for file, confidence in cached.examples(true, predicted, EXAMPLES_PER_CONFUSION)
        ]
    note = ""
    recorded = nested(val, "confusion_matrix")
    if recorded and cached.matrix() != recorded:
        differ = sum(abs(a - b) for ra, rb in zip(cached.matrix(), recorded) for a, b in zip(ra, rb)) // 2
        note = (
            f"The predictions behind these examples differ from the recorded confusion matrix in about {differ} "
            "images; the examples are the cached predictions'."
        )
    return Confusions(examples, note), False


def version_card(*, version_id: int) -> ModelCard:
    """The card of a registered version, compared with the active version of its framework."""
    with read_scope() as session:
        version = get_model_version(session=session, version_id=version_id)
        if version is None:
            raise UserError(f"Model version {version_id} does not exist.")
        facts = version_facts(version)
        active = get_active_model(session=session, framework=version.framework)
        active_facts = version_facts(active) if active is not None else None
    report, reason = _ood(facts) if backends[facts.framework].ood_features else (None, "")
    confusions, can_find = _confusions(facts)
    pair, pair_reason = _pair(facts)
    heatmaps, heatmaps_reason = _heatmaps(facts)
    card = build_card(
        facts,
        active=active_facts,
        ood_report=report,
        ood_reason=reason,
        confusions=confusions,
        pair_report=pair,
        pair_reason=pair_reason,
        heatmap_report=heatmaps,
        heatmap_reason=heatmaps_reason,
    )
    return ModelCard(card.title, card.sections, can_find_examples=can_find)


def card_html(card: ModelCard) -> str:
    """The card as one self-contained HTML page, thumbnails embedded."""
    return _templates().get_template("model_card.html").render(card=card, disclaimer=DISCLAIMER, data_uri=_data_uri)


def find_confusion_examples(actor: Actor | None, *, version_id: int) -> int:
    """Predict the version's validation images once and keep the answers beside its file; returns how many.

    The split is rebuilt from the run's folder and refused when it no longer matches the recorded one.
    """
    require_admin(actor, "predict a model's validation images")
    with read_scope() as session:
        version = get_model_version(session=session, version_id=version_id)
        if version is None:
            raise UserError(f"Model version {version_id} does not exist.")
        facts = version_facts(version)
    config = facts.record.config
    root = data_root(config)
    if root is None or not root.is_dir():
        raise UserError(f"The folder version {version_id} was trained on is not here: {root or 'not recorded'}.")
    try:
        items = confusion_examples.validation_items(config, root)
    except DatasetError as exc:
        raise UserError(f"The validation images of version {version_id} cannot be rebuilt: {exc}.") from exc
    recorded = nested(facts.record.metrics, "split", "val_per_class")
    rebuilt = [sum(1 for it in items if it.label == k) for k in range(len(recorded or []))]
    if recorded and rebuilt != list(recorded):
        raise UserError(
            f"The folder {root} no longer gives the validation split version {version_id} was scored on "
            f"({sum(rebuilt)} images per class {rebuilt}, recorded {list(recorded)}): images were added, removed or "
            "changed."
        )
    try:
        predictor = loaded_predictor(facts.framework, facts.artifact_path, facts.sha256)
    except ModelFileProblem as exc:
        raise UserError(f"Version {version_id} cannot predict: {exc}.") from exc
    predictions = confusion_examples.predict_items(predictor, items, root, model_sha256=facts.sha256)
    confusion_examples.save(predictions, facts.artifact_path)
    return len(items)
