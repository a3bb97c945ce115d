"""A registered model version's card, built from the record of the run that trained it, and its Markdown.

The card is plain data (sections of sentences, facts and tables), so that the Models page, the Markdown
export and the HTML export (services/model_card.py) say the same thing. A run record written before a field
existed shows that field as "not recorded"; nothing in a record is required.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from domain import CLASSES, DISCLAIMER, class_label, framework_label
from models.inference.combination import Combination
from models.training.backends import backends

NOT_RECORDED = "not recorded"
TOP_CONFUSIONS = 3  # the most frequent confusions a card names
EXAMPLES_PER_CONFUSION = 3


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Example:
    """A validation image the model got wrong; the thumbnail (PNG) is added where the file can be read."""

    file: str
    confidence: float
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class ExampleGroup:
    caption: str
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class Section:
    title: str
    text: tuple[str, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()
    tables: tuple[Table, ...] = ()
    examples: tuple[ExampleGroup, ...] = ()


@dataclass(frozen=True)
class ModelCard:
    title: str
    sections: tuple[Section, ...]
    can_find_examples: bool = False  # confusions to show, no cached predictions yet, and the folder is known

    def section(self, title: str) -> Section:
        return next(s for s in self.sections if s.title == title)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class RunRecord:
    """The record of the run that trained a version, parsed once; what an older record lacks is None or empty."""

    framework: str | None = None
    preset: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str | None = None
    dataset_path: str | None = None
    test_path: str | None = None
    pretrained: bool | None = None
    duration_s: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    machine: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: Any) -> "RunRecord":
        """A record as run.json and a shipped model's sidecar hold it; anything else is an empty record."""
        data = _mapping(record)
        return cls(
            framework=data.get("framework"),
            preset=data.get("preset"),
            config=_mapping(data.get("config")),
            fingerprint=data.get("fingerprint"),
            dataset_path=data.get("dataset_path"),
            test_path=data.get("test_path"),
            pretrained=data.get("pretrained"),
            duration_s=data.get("duration_s"),
            metrics=_mapping(data.get("metrics")),
            machine=_mapping(data.get("machine")),
        )


@dataclass(frozen=True)
class VersionFacts:
    """What the registry and the run record say about one version (an empty record when no run is known)."""

    version_id: int
    name: str
    framework: str
    artifact_path: str
    sha256: str
    registered: str
    is_active: bool
    file_mb: float | None
    run_id: int | None
    record: RunRecord = field(default_factory=RunRecord)


@dataclass(frozen=True)
class Confusions:
    """Examples of each confusion (true class, predicted class) -> [(file, confidence)], or why there are none."""

    examples: Mapping[tuple[str, str], Sequence[Example]] = field(default_factory=dict)
    note: str = ""


def nested(data: Any, *keys: str | int) -> Any:
    """data[k1][k2]...; None wherever a level is missing or not a container (an older record)."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _pct(value: Any, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %" if isinstance(value, int | float) else NOT_RECORDED


def _amount(value: Any, spec: str, unit: str = "") -> str:
    return f"{value:{spec}}{unit}" if isinstance(value, int | float) else NOT_RECORDED


def _num(value: Any, digits: int = 3) -> str:
    return _amount(value, f".{digits}f")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else NOT_RECORDED


def _text(value: Any) -> str:
    return NOT_RECORDED if value is None or value == "" else str(value)


def _yes_no(value: Any) -> str:
    return NOT_RECORDED if value is None else ("yes" if value else "no")


def _before_after(block: Any, name: str, digits: int = 3) -> str:
    before, after = nested(block, f"{name}_before"), nested(block, f"{name}_after")
    if before is None and after is None:
        return NOT_RECORDED
    return f"{_num(before, digits)} → {_num(after, digits)}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return NOT_RECORDED
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{seconds / 60:.1f} min"


def intended_use(version: VersionFacts) -> Section:
    run = f"run {version.run_id}" if version.run_id is not None else NOT_RECORDED
    return Section(
        "Intended use",
        text=(
            f"The {framework_label(version.framework)} reads one brain MRI slice (JPEG, PNG or DICOM) and gives "
            "calibrated probabilities of glioma, meningioma, no tumor and pituitary tumor, for clinicians "
            "reviewing the scan.",
            "It was trained and scored only on images like those described under Data. Other modalities, "
            "other body parts, other tumor types and other acquisition protocols are outside its intended use.",
            DISCLAIMER,
        ),
        facts=(
            ("Version", f"{version.version_id} · {version.name}"),
            ("Status", "active: clinicians get its predictions" if version.is_active else "not active"),
            ("File", version.artifact_path),
            ("Registered sha256", version.sha256),
            ("Registered (UTC)", version.registered),
            ("Trained by", run),
        ),
    )


def data_section(record: RunRecord) -> Section:
    config, split = record.config, nested(record.metrics, "split") or {}
    dup = nested(split, "duplicates") or {}
    if dup:
        duplicates = (
            f"{_count(dup.get('exact_duplicates'))} exact duplicates; {_count(dup.get('duplicate_groups'))} groups "
            f"of exact or near duplicates ({_count(dup.get('images_in_duplicate_groups'))} images), each group kept "
            "whole on one side of the split"
        )
    else:
        duplicates = NOT_RECORDED
    if split.get("train") is not None or split.get("val") is not None:
        split_text = (
            f"stratified and seeded (seed {_text(config.get('seed'))}), {_pct(config.get('val_fraction'))} for "
            f"validation: {_count(split.get('train'))} training and {_count(split.get('val'))} validation images"
        )
    else:
        split_text = NOT_RECORDED
    test_dir = config.get("test_dir") or record.test_path
    facts = [
        ("Training folder", _text(config.get("data_dir") or record.dataset_path)),
        ("Folder fingerprint (sha256 of the labelled content)", _text(record.fingerprint)),
        ("Images found", _count(dup.get("images"))),
        ("Duplicates", duplicates),
        ("Groups with conflicting labels", _count(dup.get("groups_with_conflicting_labels"))),
        ("Unreadable files", _count(dup.get("unreadable"))),
        ("Split", split_text),
    ]
    if config.get("max_images_per_class"):
        facts.append(("Images per class", f"capped at {config['max_images_per_class']} (a quick run)"))
    if split.get("extra_reviewed"):
        facts.append(("Reviewed scans added to training", _count(split.get("extra_reviewed"))))
    facts.append(("Test folder", _text(test_dir) if test_dir else "none given"))
    if split.get("test") is not None:
        facts.append(
            (
                "Test images",
                f"{_count(split.get('test'))}, of which {_count(split.get('test_with_duplicate_in_training'))} "
                "have a duplicate in the training data",
            )
        )
    columns = ["class", "training", "validation"]
    test_support = nested(record.metrics, "test", "per_class")
    if test_support:
        columns.append("test")
    rows = []
    for i, name in enumerate(CLASSES):
        row = [
            class_label(name),
            _count(nested(split, "train_per_class", i)),
            _count(nested(split, "val_per_class", i)),
        ]
        if test_support:
            row.append(_count(nested(test_support, name, "support")))
        rows.append(tuple(row))
    return Section("Data", facts=tuple(facts), tables=(Table(tuple(columns), tuple(rows), "Images per class"),))


def recipe_section(record: RunRecord) -> Section:
    config = record.config
    schedule = config.get("schedule")
    lr = _text(config.get("lr"))
    if schedule == "cosine":
        lr += f", {_text(config.get('warmup_epochs'))} warm-up epochs then a cosine decay"
    elif schedule == "plateau":
        lr += f", halved on a validation-loss plateau down to {_text(config.get('min_lr'))}"
    ema = config.get("ema_decay")
    machine = record.machine
    facts = [
        ("Preset", _text(record.preset or config.get("preset"))),
        ("Epochs (best)", f"{_text(config.get('epochs'))} ({_text(record.metrics.get('best_epoch'))})"),
        ("Batch size", _text(config.get("batch_size"))),
        ("Optimizer", _text(config.get("optimizer"))),
        ("Learning rate", lr),
        ("Weight decay", _text(config.get("weight_decay"))),
        ("Label smoothing", _text(config.get("label_smoothing"))),
        ("Augmentation", _text(config.get("augment"))),
        ("Weight average (EMA decay)", NOT_RECORDED if ema is None else (str(ema) if ema else "none")),
        ("Mirror test-time augmentation", _yes_no(config.get("tta"))),
        ("Cropped to the head", _yes_no(config.get("crop"))),
        ("Input size", _text(config.get("image_size"))),
    ]
    backend = backends.get(record.framework or config.get("framework"))
    if backend is not None and "pretrained" in backend.options:
        facts.append(("ImageNet weights", _yes_no(record.pretrained)))
    if config.get("init_from"):
        facts.append(("Started from", _text(PurePath(str(config["init_from"])).name)))
    distilled = nested(record.metrics, "split", "distilled")
    if config.get("distill_from"):
        teachers = ", ".join(t.get("file", "?") for t in (distilled or {}).get("teachers", [])) or NOT_RECORDED
        facts.append(
            (
                "Distilled from",
                f"{teachers} (weight {_text(config.get('distill_weight'))}, "
                f"temperature {_text(config.get('distill_temperature'))})",
            )
        )
    facts += [
        ("Training time", _duration(record.duration_s)),
        ("Machine", f"{machine['cpu']}, {machine.get('cores')} cores" if machine.get("cpu") else NOT_RECORDED),
    ]
    return Section("Recipe", facts=tuple(facts))


def per_class_table(block: Mapping[str, Any], caption: str) -> Table:
    rows = tuple(
        (
            class_label(name),
            _num(nested(block, "per_class", name, "precision")),
            _num(nested(block, "per_class", name, "recall")),
            _num(nested(block, "per_class", name, "f1")),
            _count(nested(block, "per_class", name, "support")),
        )
        for name in CLASSES
    )
    return Table(("class", "precision", "recall", "F1", "images"), rows, caption)


def matrix_table(block: Mapping[str, Any], caption: str) -> Table | None:
    matrix = nested(block, "confusion_matrix")
    labels = nested(block, "labels") or list(CLASSES)
    if not matrix:
        return None
    columns = ("true class / read as", *(class_label(n) for n in labels))
    rows = tuple((class_label(name), *(_count(v) for v in row)) for name, row in zip(labels, matrix))
    return Table(columns, rows, caption)


def results_section(title: str, block: Mapping[str, Any], *, extra: tuple[tuple[str, str], ...] = ()) -> Section:
    facts = (
        ("Images", _count(block.get("count"))),
        ("Accuracy", _pct(block.get("accuracy"))),
        ("Macro precision / recall / F1", " / ".join(_num(block.get(k)) for k in ("precision", "recall", "f1"))),
        ("Loss (cross-entropy)", _num(block.get("loss"))),
        *extra,
    )
    if not block:
        return Section(title, text=("Not recorded.",))
    tables = [per_class_table(block, "Per class")]
    if (matrix := matrix_table(block, "Confusion matrix (rows: the true class)")) is not None:
        tables.append(matrix)
    return Section(title, facts=facts, tables=tuple(tables))


def calibration_section(record: RunRecord) -> Section:
    cal = nested(record.metrics, "val", "calibration") or {}
    bins = cal.get("bins", 15)
    return Section(
        "Calibration",
        text=(
            "A temperature fitted on the validation images scales the network's outputs so that its confidence "
            "means what it says; ECE and NLL are cross-fitted (fitted on one half of the validation images, "
            "scored on the other, and the other way round). The temperature is applied wherever probabilities "
            "are shown or stored.",
        ),
        facts=(
            ("Temperature", _num(cal.get("temperature"))),
            (f"Expected calibration error ({bins} bins), before → after", _before_after(cal, "ece")),
            ("Negative log-likelihood, before → after", _before_after(cal, "nll")),
        ),
    )


def inference_section(version: VersionFacts) -> Section:
    metrics = version.record.metrics
    ms = nested(metrics, "val", "inference_ms")
    return Section(
        "Inference time and memory",
        facts=(
            ("One image, one thread", _amount(ms, ".1f", " ms (at the end of training, on its machine)")),
            ("Model file", f"{version.file_mb:.1f} MB" if version.file_mb is not None else "missing"),
            ("Peak memory of the training process", _amount(metrics.get("peak_memory_mb"), ",.0f", " MB")),
        ),
    )


def ood_section(framework: str, report: Mapping[str, Any] | None, reason: str) -> Section:
    """The out-of-distribution check fitted for this file (report: its models.evaluation.ood report), or why there is none."""
    title = "Out-of-distribution check"
    if not backends[framework].ood_features:
        return Section(
            title, text=("Fitted for the CNN only: this model is checked through the active CNN's statistics.",)
        )
    if not report:
        return Section(title, text=(reason,))
    val = report.get("validation") or {}
    families = report.get("families") or {}
    refused = (
        f"{_count(val.get('refused'))} of {_count(val.get('images'))} ({_pct(val.get('rate'))})"
        if val
        else NOT_RECORDED
    )
    rows = tuple((name, f"{_count(f.get('caught'))} of {_count(f.get('images'))}") for name, f in families.items())
    return Section(
        title,
        text=("An image scoring above the threshold is refused as not a brain MRI slice and gets no tumor class.",),
        facts=(
            ("Threshold", _amount(report.get("threshold"), ",.0f")),
            ("Rule", _text(report.get("threshold_rule"))),
            ("Validation images refused", refused),
        ),
        tables=(Table(("pictures that are not brain MRI slices", "caught"), rows),) if rows else (),
    )


PAIR_RULE_NAMES = {
    "cnn": "the CNN alone",
    "mobilenet": "MobileNetV2 alone",
    "average": "plain average",
    "weighted": "weighted average",
    "weighted_per_class": "weighted average, a weight per class",
    "stacked": "stacking model",
}
PAIR_REVIEW_THRESHOLDS = (0.7, 0.8, 0.9, 0.95, 0.96, 0.97, 0.98)


def pair_section(report: Mapping[str, Any] | None, reason: str) -> Section:
    """How this model answers together with the other (report: models.evaluation.pair_report's, made for this
    file), or why there is nothing to say."""
    title = "Together with the other model"
    if not report:
        return Section(title, text=(reason,))
    answer, review = _mapping(report.get("answer")), _mapping(report.get("review"))
    chosen_name = nested(answer, "rule", "name")
    try:
        words = Combination.of(_mapping(answer.get("rule"))).describe()
    except (KeyError, TypeError, ValueError):
        return Section(title, text=("The pair report records no rule for the two models' one answer.",))
    figures = _mapping(answer.get("cross_fitted"))
    candidates = _mapping(answer.get("candidates"))
    rows = tuple(
        (
            PAIR_RULE_NAMES.get(name, name) + (" (chosen)" if name == chosen_name else ""),
            _pct(nested(c, "accuracy")),
            _num(nested(c, "f1")),
            _num(nested(c, "lowest_recall")),
            _num(nested(c, "ece")),
        )
        for name, c in candidates.items()
    )
    chosen, held = _mapping(review.get("chosen")), _mapping(review.get("held_out"))
    disagreement = " or the models disagree" if chosen.get("on_disagreement") else ""
    table = {(r.get("threshold"), r.get("on_disagreement")): r for r in review.get("table") or []}
    review_rows = tuple(
        (_pct(t), _pct(nested(row, "flagged_share")), _pct(nested(row, "unflagged_accuracy"), 2))
        for t in PAIR_REVIEW_THRESHOLDS
        if (row := table.get((t, bool(chosen.get("on_disagreement"))))) is not None
    )
    cross = _mapping(report.get("cross_fitting"))
    return Section(
        title,
        text=(
            f"Where both models are active, the app names one answer: {words}. The rule was chosen among those "
            "below by its cross-fitted accuracy on the validation split "
            f"({_count(cross.get('folds'))} folds, copies and near copies of an image kept in one fold): each "
            "image scored by a rule, and a temperature, fitted on the other folds. Each model's own answer is "
            "shown beside it; the clinician's read is the final word.",
        ),
        facts=(
            ("Rule", _text(PAIR_RULE_NAMES.get(chosen_name, chosen_name))),
            ("Temperature of the answer", _num(nested(answer, "rule", "temperature"))),
            ("Accuracy (cross-fitted)", _pct(figures.get("accuracy"))),
            ("Macro F1", _num(figures.get("f1"))),
            ("Lowest recall", _num(figures.get("lowest_recall"))),
            ("ECE", _num(figures.get("ece"))),
            (
                "Review flag",
                f"the answer below {_pct(chosen.get('threshold'))} confident{disagreement}: "
                f"{_pct(chosen.get('flagged_share'))} of validation images flagged, the others right "
                f"{_pct(chosen.get('unflagged_accuracy'), 2)} of the time (threshold chosen on the other folds "
                f"instead: {_pct(held.get('flagged_share'))} flagged, {_pct(held.get('unflagged_accuracy'), 2)} "
                "right)",
            ),
        ),
        tables=(
            Table(
                ("rule", "accuracy", "macro F1", "lowest recall", "ECE"),
                rows,
                "Each rule on validation, cross-fitted",
            ),
            Table(
                ("flagged below", "flagged", "unflagged right"),
                review_rows,
                "The review flag at other thresholds" + (", and when the models disagree" if disagreement else ""),
            ),
        ),
    )


def top_confusions(block: Mapping[str, Any], n: int = TOP_CONFUSIONS) -> list[tuple[str, str, int, int]]:
    """(true class, predicted class, images, images of the true class) of the n most frequent confusions."""
    matrix, labels = nested(block, "confusion_matrix") or [], nested(block, "labels") or list(CLASSES)
    pairs = [
        (labels[i], labels[j], int(v), int(sum(row)))
        for i, row in enumerate(matrix)
        for j, v in enumerate(row)
        if i != j and v
    ]
    return sorted(pairs, key=lambda p: -p[2])[:n]


def failure_section(record: RunRecord, confusions: Confusions) -> Section:
    title = "Known failure modes"
    val = nested(record.metrics, "val") or {}
    if not nested(val, "confusion_matrix"):
        return Section(title, text=("Not recorded: the run record has no confusion matrix.",))
    top = top_confusions(val)
    if not top:
        return Section(title, text=("No validation image was confused with another class.",))
    recalls = {n: nested(val, "per_class", n, "recall") for n in CLASSES}
    recalls = {n: r for n, r in recalls.items() if isinstance(r, int | float)}
    text = []
    if recalls:
        low = min(recalls, key=recalls.__getitem__)
        text.append(f"Lowest recall: {class_label(low)} ({_num(recalls[low])}).")
    rows = tuple(
        (class_label(t), class_label(p), _count(k), _pct(k / total) if total else NOT_RECORDED)
        for t, p, k, total in top
    )
    groups = []
    for t, p, _, _ in top:
        shown = tuple(confusions.examples.get((t, p), ()))
        if shown:
            groups.append(ExampleGroup(f"{class_label(t)} read as {class_label(p)}", shown))
    if confusions.note:
        text.append(confusions.note)
    return Section(
        title,
        text=tuple(text),
        tables=(
            Table(
                ("true class", "read as", "images", "share of the class"),
                rows,
                "Most frequent confusions on validation",
            ),
        ),
        examples=tuple(groups),
    )


def same_validation(a: RunRecord, b: RunRecord) -> bool:
    """Whether two run records were scored on the same validation images (folder fingerprint, seed, share, cap)."""
    keys = ("val_fraction", "seed", "max_images_per_class")
    return (
        bool(a.fingerprint) and a.fingerprint == b.fingerprint and all(a.config.get(k) == b.config.get(k) for k in keys)
    )


def _lowest_recall(block: Any) -> float | None:
    recalls = [nested(block, "per_class", n, "recall") for n in CLASSES]
    recalls = [r for r in recalls if isinstance(r, int | float)]
    return min(recalls) if recalls else None


def comparison_section(version: VersionFacts, active: VersionFacts | None) -> Section:
    title = "Compared with the active version"
    if version.is_active:
        return Section(title, text=("This is the active version.",))
    if active is None:
        return Section(title, text=("No version of this model is active.",))
    mine, theirs = nested(version.record.metrics, "val") or {}, nested(active.record.metrics, "val") or {}
    figures: list[tuple[str, Any, Any, str]] = [
        ("validation accuracy", mine.get("accuracy"), theirs.get("accuracy"), "pct"),
        ("macro F1", mine.get("f1"), theirs.get("f1"), "num"),
        ("lowest recall", _lowest_recall(mine), _lowest_recall(theirs), "num"),
        *(
            (f"F1 {class_label(n)}", nested(mine, "per_class", n, "f1"), nested(theirs, "per_class", n, "f1"), "num")
            for n in CLASSES
        ),
        (
            "ECE after calibration",
            nested(mine, "calibration", "ece_after"),
            nested(theirs, "calibration", "ece_after"),
            "num",
        ),
        ("ms / image", mine.get("inference_ms"), theirs.get("inference_ms"), "ms"),
    ]
    rows = []
    for name, a, b, kind in figures:
        show = {"pct": _pct, "num": _num, "ms": lambda v: _num(v, 1)}[kind]
        if isinstance(a, int | float) and isinstance(b, int | float):
            diff = f"{100 * (a - b):+.1f} points" if kind == "pct" else f"{a - b:+.{1 if kind == 'ms' else 3}f}"
        else:
            diff = "–"
        rows.append((name, show(a), show(b), diff))
    if same_validation(version.record, active.record):
        note = "Both were scored on the same validation images (same folder fingerprint, seed and share)."
    else:
        note = (
            "The two were scored on different validation images (another folder, seed, share or cap, or one "
            "not recorded): their figures are not directly comparable."
        )
    columns = ("figure", "this version", f"active: version {active.version_id}", "difference")
    return Section(title, text=(note,), tables=(Table(columns, tuple(rows)),))


# What the heatmap section aims at (issue: the heat of a map that points at the brain).
HEAT_IN_BRAIN_AIM, PEAKS_IN_BRAIN_AIM = 0.80, 0.95


def heatmap_section(report: Mapping[str, Any] | None, reason: str) -> Section:
    """How far this model's heatmap can be trusted (report: models.evaluation.heatmap_quality's figures for this
    file), or why there is nothing to say."""
    title = "Heatmap"
    if not report:
        return Section(title, text=(reason,))
    rows = tuple(
        (
            class_label(name),
            _count(nested(c, "images")),
            _pct(nested(c, "heat_in_brain")),
            _pct(nested(c, "peaks_in_brain")),
        )
        for name, c in _mapping(report.get("per_class")).items()
    )
    return Section(
        title,
        text=(
            f"{_text(report.get('method'))} over a grid of {_text(report.get('grid'))} cells, measured on "
            f"{_count(report.get('images'))} validation images. Faithfulness: the predicted class's probability as "
            "the map's hottest pixels are blacked out first (deletion: lower is better) or revealed first on a "
            "black image (insertion: higher is better), against the same with a random smooth map. Where the heat "
            "falls: inside the brain is the head with its outer ring (scalp and skull) taken off. The aim is "
            f"{_pct(HEAT_IN_BRAIN_AIM, 0)} of the heat and {_pct(PEAKS_IN_BRAIN_AIM, 0)} of the peaks inside it.",
        ),
        facts=(
            (
                "Deletion area (map / random)",
                f"{_num(report.get('deletion_auc'))} / {_num(report.get('deletion_auc_random'))}",
            ),
            (
                "Insertion area (map / random)",
                f"{_num(report.get('insertion_auc'))} / {_num(report.get('insertion_auc_random'))}",
            ),
            (
                "Images where the map beats random",
                f"deletion {_pct(report.get('deletion_beats_random'))}, insertion {_pct(report.get('insertion_beats_random'))}",
            ),
            ("Heat inside the brain", _pct(report.get("heat_in_brain"))),
            ("Peaks inside the brain", _pct(report.get("peaks_in_brain"))),
        ),
        tables=(
            *(
                (Table(("true class", "images", "heat inside the brain", "peaks inside the brain"), rows),)
                if rows
                else ()
            ),
            *((_curve_table(curves),) if (curves := _mapping(report.get("curves"))) else ()),
        ),
    )


# The points of the mean deletion and insertion curves the card shows: shares of the input, and their names.
CURVE_POINTS = {0.0: "none", 0.125: "1/8", 0.25: "1/4", 0.5: "1/2", 0.75: "3/4", 1.0: "all"}


def _curve_table(curves: Mapping[str, Any]) -> Table:
    """The mean curves at CURVE_POINTS: the predicted class's probability with that share of the input hidden
    (deletion) or revealed (insertion), hottest pixels first, and in a random map's order."""
    names = ("deletion", "deletion_random", "insertion", "insertion_random")

    def at(name: str, share: float) -> str:
        points = curves.get(name) or []
        index = share * (len(points) - 1)
        return _num(points[round(index)], 2) if points and float(index).is_integer() else NOT_RECORDED

    return Table(
        ("share hidden or revealed", "deletion: map", "deletion: random", "insertion: map", "insertion: random"),
        tuple((words, *(at(name, share) for name in names)) for share, words in CURVE_POINTS.items()),
        caption="Mean probability of the predicted class along the curves",
    )


def build_card(
    version: VersionFacts,
    *,
    active: VersionFacts | None,
    ood_report: Mapping[str, Any] | None = None,
    ood_reason: str = NOT_RECORDED,
    confusions: Confusions | None = None,
    pair_report: Mapping[str, Any] | None = None,
    pair_reason: str = NOT_RECORDED,
    heatmap_report: Mapping[str, Any] | None = None,
    heatmap_reason: str = NOT_RECORDED,
) -> ModelCard:
    """The card of one version; `active` is the version clinicians use now for the same framework."""
    record = version.record
    metrics = record.metrics
    sections = [
        intended_use(version),
        data_section(record),
        recipe_section(record),
        results_section("Validation results", metrics.get("val") or {}),
    ]
    if metrics.get("test"):
        clean = nested(metrics, "test_without_training_duplicates", "accuracy")
        extra = (("Accuracy on test images with no duplicate in training", _pct(clean)),) if clean is not None else ()
        sections.append(results_section("Test results", metrics["test"], extra=extra))
    sections += [
        calibration_section(record),
        inference_section(version),
        ood_section(version.framework, ood_report, ood_reason),
        pair_section(pair_report, pair_reason),
        heatmap_section(heatmap_report, heatmap_reason),
        failure_section(record, confusions or Confusions()),
        comparison_section(version, active),
    ]
    title = f"{version.name} (version {version.version_id}, {framework_label(version.framework)})"
    return ModelCard(title, tuple(sections))


MARKDOWN_SPECIALS = str.maketrans({c: "\\" + c for c in "\\`*[]<>|$~#"})


def escape(text: str) -> str:
    """Text shown as written in Markdown (and in Streamlit's, where $ starts formulas)."""
    return text.translate(MARKDOWN_SPECIALS)


def table_markdown(table: Table) -> str:
    lines = [f"*{escape(table.caption)}*", ""] if table.caption else []
    lines.append("| " + " | ".join(escape(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


def section_markdown(section: Section, *, level: int = 2, with_title: bool = True) -> str:
    """One section; examples are listed by file (the HTML export and the page show the thumbnails)."""
    parts = [f"{'#' * level} {escape(section.title)}"] if with_title else []
    parts += [escape(t) for t in section.text]
    if section.facts:
        parts.append("\n".join(f"- **{escape(k)}**: {escape(v)}" for k, v in section.facts))
    parts += [table_markdown(t) for t in section.tables]
    for group in section.examples:
        items = "\n".join(f"- {escape(e.file)} ({100 * e.confidence:.0f} % confident)" for e in group.examples)
        parts.append(f"*{escape(group.caption)}*, examples from validation:\n\n{items}")
    return "\n\n".join(parts)


def card_markdown(card: ModelCard, *, level: int = 1) -> str:
    """The whole card as Markdown, headed `level` (its sections one level below)."""
    body = [section_markdown(s, level=level + 1) for s in card.sections]
    return "\n\n".join([f"{'#' * level} Model card: {escape(card.title)}", *body]) + "\n"
