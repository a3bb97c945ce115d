"""Models: every registered model version; choose the one clinicians use, restore the previous, download files."""

from pathlib import Path

import pandas as pd
import streamlit as st

from db.registry import VersionRow, previous_active, version_rows
from db.session import read_scope
from domain import FRAMEWORKS, Role, UserError, framework_label
from services import registry
from services.model_files import FileCheck, check_file
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
    """A version may be made active only while its file is the one registered; otherwise say why not."""
    problem = file_check(version).problem(version.artifact_path)
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
    st.download_button(
        "Download" if check.state == "ok" else "Download the changed file",
        data=lambda: registry.model_file(ACTOR, version_id=version.id),  # read (and audited) when clicked
        file_name=f"{framework}-v{version.id}-{version.sha256[:12]}{path.suffix}",
        mime="application/octet-stream",
        key=f"models_download_button_{framework}",
    )


def promote(framework: str, versions: list[VersionRow]) -> None:
    """Pick a version to make active, with its run's figures and a link to the run."""
    candidates = {v.id: v for v in versions if not v.is_active}
    if not candidates:
        return
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
    promote_col, restore_col = st.columns(2)
    with promote_col:
        promote(framework, versions)
    previous = next((v for v in versions if before is not None and v.id == before.id), None)
    if previous is not None:
        restore_col.button(
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
