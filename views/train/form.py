"""The Train page's form: a preset fills the fields, and every value is checked before a run is queued.

The chosen folders' health report shows before a run starts; a run on a folder whose report warns (a class
below 5 %, test images also in training) is refused until the admin acknowledges the warnings.
"""

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from domain import FRAMEWORKS, framework_label
from models.data.dataset import DatasetError
from models.data.folders import LabelledFolder, find_labelled_folders, labelled_folder
from models.data.health import HealthReport
from models.nets.mobilenet import MissingWeightsError, resolve_weights
from models.training.config import AUGMENT_LEVELS, ConfigError, TrainConfig, make_config, preset_names
from services.dataset_health import dataset_health, health_record
from settings import SAMPLE_DIR, get_settings
from ui import errors
from ui.auth import signed_in
from ui.jobs import submission_key
from ui.text import literal
from views.train.health import render_report
from views.train.live_runs import WATCH_KEY
from worker.submit import QueueUnavailable, submit_training

# Form fields a preset sets; each widget's key is "train_<field>".
PRESET_FIELDS = ("epochs", "batch_size", "lr", "augment", "seed", "pretrained", "fine_tune_epoch")
OTHER_FOLDER = "Another folder…"
NO_TEST_FOLDER = "No test folder"
WATCHED_RUNS = 5
# The last health report shown: {"folders": [data_dir, test_dir], "report": HealthReport.to_dict()}.
HEALTH_KEY = "train_health"


@dataclass(frozen=True)
class TrainForm:
    """What the form holds: raw values, checked by `check_form`."""

    framework: str
    preset: str
    data_dir: str
    test_dir: str | None
    epochs: int
    batch_size: int
    lr: float
    augment: str
    seed: int
    pretrained: bool
    fine_tune_epoch: int
    use_reviewed: bool
    max_images_per_class: int | None


def preset_defaults(framework: str, preset: str) -> TrainConfig:
    return make_config(framework, str(SAMPLE_DIR), preset)


def check_form(form: TrainForm, roots: list[Path]) -> tuple[TrainConfig | None, list[str]]:
    """The run's config, or every reason the form cannot start one (as sentences for the page)."""
    problems: list[str] = []
    folders: dict[str, LabelledFolder] = {}
    for name, path in (("Dataset folder", form.data_dir), ("Test folder", form.test_dir)):
        if path is None:
            continue
        try:
            folders[name] = labelled_folder(path, roots)
        except DatasetError as exc:
            problems.append(f"{name}: {exc}")
    overrides: dict[str, object] = {
        "test_dir": str(folders["Test folder"].path) if "Test folder" in folders else None,
        "epochs": form.epochs,
        "batch_size": form.batch_size,
        "lr": form.lr,
        "augment": form.augment,
        "seed": form.seed,
        "max_images_per_class": form.max_images_per_class,
    }
    if form.framework == "keras":
        overrides |= {"pretrained": form.pretrained, "fine_tune_epoch": form.fine_tune_epoch}
    data_dir = str(folders["Dataset folder"].path) if "Dataset folder" in folders else form.data_dir
    try:
        cfg = make_config(form.framework, data_dir, form.preset, **overrides)
    except ConfigError as exc:
        return None, problems + [_sentence(problem) for problem in exc.problems]
    except ValueError as exc:
        return None, problems + [_sentence(str(exc))]
    if cfg.framework == "keras":
        try:
            resolve_weights(cfg)
        except MissingWeightsError as exc:
            problems.append(str(exc))
    return (None if problems else cfg), problems


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@st.cache_data(ttl=60, show_spinner=False)
def _labelled_folders(roots: tuple[str, ...]) -> list[str]:
    return [str(path) for path in find_labelled_folders([Path(root) for root in roots])]


def folder_choices() -> list[str]:
    """The shipped sample first, then labelled folders found under the allowed roots."""
    found = _labelled_folders(tuple(str(root) for root in get_settings().allowed_data_roots))
    sample = str(SAMPLE_DIR.resolve())
    return [sample, *(path for path in found if path != sample)]


def _fill_preset_fields() -> None:
    cfg = preset_defaults(st.session_state["train_framework"], st.session_state["train_preset"])
    for field in PRESET_FIELDS:
        st.session_state[f"train_{field}"] = getattr(cfg, field)


def _folder_input(label: str, key: str, choices: list[str], *, optional: bool) -> str | None:
    options = ([NO_TEST_FOLDER] if optional else []) + choices + [OTHER_FOLDER]
    choice = st.selectbox(label, options, key=f"{key}_choice")
    if choice == OTHER_FOLDER:
        typed = st.text_input(
            f"{label}: full path",
            key=f"{key}_path",
            placeholder="/path/to/folder with glioma/ meningioma/ notumor/ pituitary/ inside",
        )
        return typed
    return None if choice == NO_TEST_FOLDER else choice


def _weights_note(image_size: int) -> None:
    """Say plainly whether this machine has the MobileNetV2 ImageNet weights."""
    cfg = make_config("keras", str(SAMPLE_DIR), pretrained=True, image_size=image_size)
    try:
        found = resolve_weights(cfg)
    except MissingWeightsError as exc:
        st.info(f"**No ImageNet weights on this machine.** {exc}")
        return
    st.success(f"ImageNet weights found on this machine: `{found}`")


def _check_dataset(data_dir: str, test_dir: str | None) -> HealthReport | None:
    """The folders' health report (stored after the first time), remembered for this session; None if refused."""
    try:
        with st.spinner("Checking the dataset: every image is read and hashed the first time…"):
            report = dataset_health(data_dir, test_dir, settings=get_settings())
    except DatasetError as exc:
        st.error(f"The dataset cannot be checked: {exc}")
        return None
    st.session_state[HEALTH_KEY] = {"folders": [data_dir, test_dir], "report": report.to_dict()}
    return report


def _remembered_report(data_dir: str, test_dir: str | None) -> HealthReport | None:
    stored = st.session_state.get(HEALTH_KEY)
    if stored and stored["folders"] == [data_dir, test_dir]:
        return HealthReport.from_dict(stored["report"])
    return None


def _show_health(report: HealthReport) -> bool:
    """Draw the report; whether a run may start on it: no warnings, or the admin acknowledged them (once per
    pair of folders as they are now)."""
    render_report(report)
    if not report.needs_acknowledgment:
        return True
    test = report.test["fingerprint"] if report.test else "-"
    return st.checkbox(
        "I have read these warnings and want to train on this data anyway",
        key=f"train_health_ack_{report.fingerprint[:16]}_{test[:16]}",
        help="Recorded with the run, under your name.",
    )


def train_form() -> None:
    """The form; on "Start training" it checks every value, then queues the run or lists what is wrong."""
    if "train_framework" not in st.session_state:
        st.session_state["train_framework"], st.session_state["train_preset"] = "torch", "report"
        _fill_preset_fields()
    top = st.columns(2)
    framework = top[0].selectbox(
        "Model",
        list(FRAMEWORKS),
        format_func=framework_label,
        key="train_framework",
        on_change=_fill_preset_fields,
    )
    preset = top[1].selectbox(
        "Preset",
        preset_names(),
        key="train_preset",
        on_change=_fill_preset_fields,
        help="report: the recipes as the report wrote them; improved: a schedule and averaging that steady the "
        "validation accuracy. Choosing one fills the fields below.",
    )
    choices = folder_choices()
    folders = st.columns(2)
    with folders[0]:
        data_dir = _folder_input("Dataset folder", "train_data", choices, optional=False)
    with folders[1]:
        test_dir = _folder_input("Test folder (optional, scored at the end)", "train_test", choices, optional=True)
    health = st.container(border=True)
    health.markdown(
        "**Check the dataset** · images per class, sizes and modes, unreadable files, duplicates and, with a "
        "test folder, test images that are also in training. Runs before every start; stored for next time."
    )
    checked = health.button("Check the dataset", key="train_health_check")
    values = _settings_fields(framework)
    if framework == "keras":
        _weights_note(preset_defaults(framework, preset).image_size)
    clicked = st.button("Start training", type="primary", key="train_submit")
    key = submission_key("train", clicked=clicked)
    folders = (data_dir or "", test_dir)
    if checked:
        with health:
            report = _check_dataset(*folders)
    else:
        report = _remembered_report(*folders)
    if not clicked:
        if report is not None:
            with health:
                _show_health(report)
        return
    form = TrainForm(framework=framework, preset=preset, data_dir=data_dir or "", test_dir=test_dir, **values)
    cfg, problems = check_form(form, list(get_settings().allowed_data_roots))
    if cfg is None:
        if report is not None:
            with health:
                _show_health(report)
        for problem in problems:
            st.error(problem)
        return
    with health:
        # Checked again at every start: a stored report comes back at once, and a changed folder is read afresh.
        report = _check_dataset(*folders)
        acknowledged = report is not None and _show_health(report)
    if report is None:
        st.error("The run was not queued: the dataset could not be checked (see above).")
        return
    if not acknowledged:
        st.error(
            "The run was not queued: the dataset check found problems (see above). Tick “I have read these "
            "warnings…” to train on this data anyway."
        )
        return
    _queue(cfg, form.use_reviewed, report, key)


def _settings_fields(framework: str) -> dict[str, object]:
    """The run's settings as the form shows them (a preset filled them), as TrainForm's fields."""
    numbers = st.columns(4)
    epochs = numbers[0].number_input("Epochs", step=1, key="train_epochs")
    batch_size = numbers[1].number_input("Batch size", step=1, key="train_batch_size")
    lr = numbers[2].number_input("Learning rate", step=1e-4, format="%.6f", key="train_lr")
    seed = numbers[3].number_input("Seed", step=1, key="train_seed")
    options = st.columns(4)
    augment = options[0].selectbox("Augmentation", AUGMENT_LEVELS, key="train_augment")
    pretrained, fine_tune_epoch = False, 1
    if framework == "keras":
        pretrained = options[1].checkbox("Start from ImageNet weights", key="train_pretrained")
        fine_tune_epoch = options[2].number_input(
            "Fine-tune from epoch",
            step=1,
            key="train_fine_tune_epoch",
            help="From this epoch on, the top of the MobileNetV2 base is trained too, at a low learning rate.",
        )
    use_reviewed = options[3].checkbox(
        "Add scans clinicians reviewed",
        key="train_use_reviewed",
        help="Scans whose label a clinician confirmed or corrected join the training side (never validation).",
    )
    with st.expander("Advanced"):
        cap = st.number_input(
            "Cap images per class",
            min_value=1,
            value=None,
            step=1,
            key="train_max_images",
            placeholder="no cap",
            help="Use at most this many images of each class: for a quick trial run.",
        )
    return {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "augment": augment,
        "seed": int(seed),
        "pretrained": bool(pretrained),
        "fine_tune_epoch": int(fine_tune_epoch),
        "use_reviewed": use_reviewed,
        "max_images_per_class": int(cap) if cap is not None else None,
    }


def _queue(cfg: TrainConfig, use_reviewed: bool, report: HealthReport, key: str) -> None:
    """Queue the run with the dataset check it starts on, and follow it below."""
    actor = signed_in()
    with errors.shown("The run was not queued: ") as outcome:
        try:
            job_id, run_id = submit_training(
                cfg,
                actor=actor,
                use_reviewed=use_reviewed,
                idempotency_key=key,
                dataset_health=health_record(report, acknowledged_by=actor),
            )
        except QueueUnavailable as exc:
            # Its job is recorded as failed, with the run and the check: a person can see why and try again.
            st.error(f"The run was not queued: {literal(exc)}")
            return
    if outcome.failed:
        return
    st.session_state[WATCH_KEY] = [run_id, *st.session_state.get(WATCH_KEY, [])][:WATCHED_RUNS]
    st.success(f"Run {run_id} is queued (job {job_id}); it shows below and starts when a worker is free.")
