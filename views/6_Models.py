"""Models: every registered model version and its card; choose the one clinicians use (under the card of the
version chosen), restore the previous, download files."""

from pathlib import Path

import pandas as pd
import streamlit as st

from db.registry import VersionRow, previous_active, version_rows
from db.session import read_scope
from domain import FRAMEWORKS, Role, UserError, framework_label
from services import model_card, registry
from services.model_card_document import ModelCard, escape, section_markdown
from services.model_files import FileCheck, check_file, companion_problems, companion_states, companion_summary
from ui.auth import require
from ui.nav import link_to_page

NOTICE_KEY = "models_notice"
PERCENT = st.column_config.NumberColumn(format="percent")

ACTOR = require(Role.ADMIN)
st.title("Model registry")
st.caption(
    "One version per model is active: the Diagnose page and every new batch job use it from their next "
    "prediction on, without a restart. Versions that are not active stay registered and can be made active again."
)


@st.cache_data(max_entries=64, show_spinner="Checking the file's sha256…")
def _check(path: str, sha256: str, size: int, mtime_ns: int) -> FileCheck:
    # Keyed by size and modification time too, so a file replaced on disk is hashed again.
    return check_file(path, sha256)


def file_check(version: VersionRow) -> FileCheck:
    path = Path(version.artifact_path)
    if not path.is_file():
        return FileCheck("missing", None, None)
    stat = path.stat()
    return _check(str(path), version.sha256, stat.st_size, stat.st_mtime_ns)


def _usable(version: VersionRow) -> bool:
    """A version may be made active only while its file and the files its answers depend on are those recorded;
    otherwise say why not."""
    problem = file_check(version).problem(version.artifact_path)
    problem = problem or next(iter(companion_problems(companion_states(version.id))), None)
    if problem is None:
        return True
    message = f"Version {version.id} was not made active: {problem}."
    st.session_state[NOTICE_KEY] = ("error", message)
    return False


def activate(version: VersionRow, rollback: bool = False) -> None:
    if not _usable(version):
        return
    try:
        registry.activate(ACTOR, version_id=version.id, rollback=rollback)
    except UserError as exc:
        st.session_state[NOTICE_KEY] = ("error", str(exc))
        return
    message = f"{version.name} (version {version.id}) is now the active {framework_label(version.framework)} model."
    st.session_state[NOTICE_KEY] = ("success", message)


@st.cache_data(ttl=60, max_entries=32, show_spinner="Reading the model card…")
def _card(version: VersionRow, active: VersionRow | None) -> ModelCard:
    # Keyed by the whole rows (registration times included), and by the active one, which the card compares with.
    return model_card.version_card(version_id=version.id)


def find_examples(version: VersionRow) -> None:
    with st.spinner(f"Predicting the validation images of version {version.id} once…"):
        try:
            count = model_card.find_confusion_examples(ACTOR, version_id=version.id)
        except UserError as exc:
            st.error(str(exc))
            return
    _card.clear()
    st.session_state[NOTICE_KEY] = ("success", f"Version {version.id}: {count} validation images predicted.")
    st.rerun()


def show_card(version: VersionRow, active: VersionRow | None, place: str) -> None:
    """A version's card, section by section, with its example images and its Markdown and HTML exports."""
    try:
        card = _card(version, active)
    except UserError as exc:
        st.error(str(exc))
        return
    st.markdown(f"#### Model card: {escape(card.title)}")
    for section in card.sections:
        st.markdown(section_markdown(section, level=5))
        for group in section.examples:
            shown = [e for e in group.examples if e.thumbnail]
            if shown:
                st.image(
                    [e.thumbnail for e in shown],
                    caption=[f"{e.file} · {100 * e.confidence:.0f} %" for e in shown],
                    width=140,
                )
                st.caption(f"{group.caption}: examples from validation, the most confident first.")
    if card.can_find_examples and st.button(
        "Find example images of the confusions (predicts the validation images once)",
        key=f"models_examples_{place}_{version.id}",
    ):
        find_examples(version)
    stem = f"model-card-{version.framework}-v{version.id}"
    md_col, html_col = st.columns(2)
    md_col.download_button(
        "Download the card (Markdown)",
        data=model_card.card_markdown(card),
        file_name=f"{stem}.md",
        mime="text/markdown",
        key=f"models_card_md_{place}_{version.id}",
    )
    html_col.download_button(
        "Download the card (HTML)",
        data=lambda: model_card.card_html(card),
        file_name=f"{stem}.html",
        mime="text/html",
        key=f"models_card_html_{place}_{version.id}",
    )


def versions_table(versions: list[VersionRow]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "version": v.id,
                "active": v.is_active,
                "name": v.name,
                "run": v.run_id,
                "preset": v.preset,
                "val accuracy": v.val_accuracy,
                "val F1": v.val_f1,
                "test accuracy": v.test_accuracy,
                "sha256": v.sha256[:16],
                "file": v.artifact_path,
                "registered (UTC)": v.created_at,
                "last activated (UTC)": v.activated_at,
            }
            for v in versions
        ]
    )


def download(framework: str, versions: list[VersionRow]) -> None:
    names = {v.id: f"version {v.id} · {v.name}" for v in versions}
    active = next((i for i, v in enumerate(versions) if v.is_active), 0)
    chosen = st.selectbox(
        "Download a model file", list(names), index=active, format_func=names.get, key=f"models_download_{framework}"
    )
    version = next(v for v in versions if v.id == chosen)
    st.markdown(f"Registered sha256: `{version.sha256}`")
    check = file_check(version)
    if check.state == "missing":
        st.error(f"The file `{version.artifact_path}` is missing: this version cannot be downloaded or used.")
        return
    path = Path(version.artifact_path)
    if check.state == "changed":
        st.warning(
            f"The file changed since it was registered: it now has sha256 `{check.sha256}`. It is not the model "
            "that was trained and scored; download it only to inspect it."
        )
    else:
        st.caption(f"The file matches its registered sha256 ({check.size_bytes / 1e6:.1f} MB).")
    companions = companion_states(version.id)
    for problem in companion_problems(companions):
        st.error(f"This version is refused wherever it would answer: {problem}.")
    st.caption(companion_summary(companions))
    st.download_button(
        "Download" if check.state == "ok" else "Download the changed file",
        data=lambda: registry.model_file(ACTOR, version_id=version.id),  # read (and audited) when clicked
        file_name=f"{framework}-v{version.id}-{version.sha256[:12]}{path.suffix}",
        mime="application/octet-stream",
        key=f"models_download_button_{framework}",
    )


def promote(framework: str, versions: list[VersionRow], active: VersionRow | None) -> None:
    """Pick a version to make active: its card is read first, the button sits under it."""
    candidates = {v.id: v for v in versions if not v.is_active}
    if not candidates:
        return
    st.subheader("Make a version active", anchor=False)
    chosen = st.selectbox(
        "Make active",
        list(candidates),
        format_func=lambda i: f"version {i} · {candidates[i].name}",
        key=f"models_promote_{framework}",
    )
    version = candidates[chosen]
    if version.run_id is not None:
        accuracy = f"{version.val_accuracy:.2%}" if version.val_accuracy is not None else "–"
        st.caption(f"Trained by run {version.run_id} ({version.preset}): validation accuracy {accuracy}.")
        link_to_page(
            "views/5_Leaderboard.py",
            label=f"Run {version.run_id} on the leaderboard",
            query_params={"run": str(version.run_id)},
        )
    with st.container(border=True):
        show_card(version, active, "promote")
    st.button("Make this version active", key=f"models_activate_{framework}", on_click=activate, args=(version,))


def framework_section(framework: str) -> None:
    """One framework's versions: the table, promoting, restoring the previous one, downloading."""
    with read_scope() as session:
        versions = version_rows(session=session, framework=framework)
        before = previous_active(session=session, framework=framework)
    if not versions:
        st.info("No version yet: train one on the Train page; a finished run registers its model here.")
        return
    active = next((v for v in versions if v.is_active), None)
    if active is None:
        st.warning("No version is active: clinicians get no prediction from this model until one is made active.")
    else:
        st.markdown(f"Active: **{active.name}** (version {active.id})")
    st.dataframe(
        versions_table(versions),
        hide_index=True,
        key=f"models_table_{framework}",
        column_config={name: PERCENT for name in ("val accuracy", "val F1", "test accuracy")},
    )
    st.subheader("Model cards", anchor=False)
    for version in versions:
        label = f"Version {version.id} · {version.name}" + (" (active)" if version.is_active else "")
        with st.expander(label):
            show_card(version, active, "list")
    promote(framework, versions, active)
    previous = next((v for v in versions if before is not None and v.id == before.id), None)
    if previous is not None:
        st.button(
            f"Restore the previous version: {previous.name} (version {previous.id})",
            key=f"models_restore_{framework}",
            on_click=activate,
            args=(previous, True),
        )
    download(framework, versions)


if notice := st.session_state.pop(NOTICE_KEY, None):
    kind, text = notice
    (st.success if kind == "success" else st.error)(text)

for framework in FRAMEWORKS:
    st.header(framework_label(framework))
    framework_section(framework)
    st.divider()
