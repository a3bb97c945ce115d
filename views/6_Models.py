"""Models: every registered model version and its card; choose the one clinicians use (under the card of the
version chosen, with what the change would cost clinicians and, if anything, a reason), restore the previous one,
download files."""

from pathlib import Path

import pandas as pd
import streamlit as st

from db.registry import VersionRow, previous_active, version_rows
from db.session import read_scope
from domain import FRAMEWORKS, Role, framework_label
from services import registry
from services.model_files import FileCheck, check_file, companion_problems, companion_states, companion_summary
from services.registry import MIN_REASON_CHARS, ActivationCheck
from ui import errors, notices
from ui.auth import require
from ui.nav import pages
from ui.text import literal
from views.registry.cards import show_card

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


@st.cache_data(ttl=60, max_entries=64, show_spinner=False)
def _activation_check(version: VersionRow, active: VersionRow | None) -> ActivationCheck:
    # Keyed by both rows: another active version, or a re-registered file, is judged afresh.
    return registry.activation_check(version_id=version.id)


def _usable(version: VersionRow) -> bool:
    """A version may be made active only while its file and the files its answers depend on are those recorded;
    otherwise say why not."""
    problem = file_check(version).problem(version.artifact_path)
    problem = problem or next(iter(companion_problems(companion_states(version.id))), None)
    if problem is None:
        return True
    notices.later(f"Version {version.id} was not made active: {literal(problem)}.", kind="error")
    return False


def activate(version: VersionRow, rollback: bool = False, reason_key: str | None = None) -> None:
    if not _usable(version):
        return
    reason = st.session_state.get(reason_key, "") if reason_key else None
    with errors.shown(later=notices.PAGE) as outcome:
        registry.activate(ACTOR, version_id=version.id, rollback=rollback, reason=reason)
    if outcome.failed:
        return
    if reason_key:
        st.session_state[reason_key] = ""
    notices.later(
        f"{literal(version.name)} (version {version.id}) is now the active {framework_label(version.framework)} model.",
        kind="success",
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
        st.error(f"This version is refused wherever it would answer: {literal(problem)}.")
    st.caption(companion_summary(companions))
    st.download_button(
        "Download" if check.state == "ok" else "Download the changed file",
        data=lambda: registry.model_file(ACTOR, version_id=version.id),  # read (and audited) when clicked
        file_name=f"{framework}-v{version.id}-{version.sha256[:12]}{path.suffix}",
        mime="application/octet-stream",
        key=f"models_download_button_{framework}",
    )


def confirmation(check: ActivationCheck, reason_key: str, *, restoring: bool = False) -> bool:
    """What making the version active costs, and the reason it then needs; whether the button may be pressed."""
    for note in check.notes:
        st.caption(note)
    if not check.needs_reason:
        return True
    what = "Restoring" if restoring else "Making"
    costs = "".join(f"\n- {literal(cost[:1].upper() + cost[1:])}." for cost in check.costs)
    st.warning(f"**{what} {literal(check.name)} the active model would cost clinicians:**{costs}", icon="⚠️")
    reason = st.text_input(
        "Why make it active anyway? (kept in the audit log)",
        key=reason_key,
        max_chars=500,
        placeholder=f"At least {MIN_REASON_CHARS} characters",
    )
    return len(" ".join(reason.split())) >= MIN_REASON_CHARS


def promote(framework: str, versions: list[VersionRow], active: VersionRow | None, previous: VersionRow | None) -> None:
    """Pick a version to make active (the active one is preselected): its card is read first, what it would cost
    clinicians stated, and the button sits under them."""
    st.subheader("Make a version active", anchor=False)
    by_id = {v.id: v for v in versions}
    key = f"models_promote_{framework}"
    # The active version first: set through the session, so that "Restore" (a callback) can choose another.
    st.session_state.setdefault(key, active.id if active is not None else versions[0].id)
    chosen = st.selectbox(
        "Version",
        list(by_id),
        format_func=lambda i: f"version {i} · {by_id[i].name}" + (" (active)" if by_id[i].is_active else ""),
        key=key,
    )
    version = by_id[chosen]
    if version.run_id is not None:
        accuracy = f"{version.val_accuracy:.2%}" if version.val_accuracy is not None else "–"
        st.caption(f"Trained by run {version.run_id} ({version.preset}): validation accuracy {accuracy}.")
        st.page_link(
            pages().leaderboard,
            label=f"Run {version.run_id} on the leaderboard",
            query_params={"run": str(version.run_id)},
        )
    with st.container(border=True):
        show_card(ACTOR, version, active, "promote")
    if version.is_active:
        st.caption("This is the active version: choose another above to make it active instead.")
        return
    rollback = previous is not None and version.id == previous.id
    reason_key = f"models_reason_{framework}"
    ready = confirmation(_activation_check(version, active), reason_key, restoring=rollback)
    st.button(
        "Make this version active",
        key=f"models_activate_{framework}",
        on_click=activate,
        args=(version, rollback, reason_key),
        disabled=not ready,
        type="primary",
    )


def _choose(framework: str, version_id: int) -> None:
    st.session_state[f"models_promote_{framework}"] = version_id
    notices.later(f"Restoring version {version_id} needs a reason: see “Make a version active” below.", kind="warning")


def restore_button(framework: str, previous: VersionRow, active: VersionRow | None) -> None:
    """Restore the version active before this one: at once, or, when that costs clinicians, through the form."""
    label = f"Restore the previous version: {previous.name} (version {previous.id})"
    if _activation_check(previous, active).needs_reason:
        st.button(label, key=f"models_restore_{framework}", on_click=_choose, args=(framework, previous.id))
    else:
        st.button(label, key=f"models_restore_{framework}", on_click=activate, args=(previous, True))


def framework_section(framework: str) -> None:
    """One framework's versions: the table, restoring the previous one, promoting, downloading."""
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
        st.markdown(f"Active: **{literal(active.name)}** (version {active.id})")
    st.dataframe(
        versions_table(versions),
        hide_index=True,
        key=f"models_table_{framework}",
        column_config={name: PERCENT for name in ("val accuracy", "val F1", "test accuracy")},
    )
    previous = next((v for v in versions if before is not None and v.id == before.id), None)
    if previous is not None:
        restore_button(framework, previous, active)
    st.subheader("Model cards", anchor=False)
    for version in versions:
        label = f"Version {version.id} · {literal(version.name)}" + (" (active)" if version.is_active else "")
        with st.expander(label):
            show_card(ACTOR, version, active, "list")
    promote(framework, versions, active, previous)
    download(framework, versions)


notices.show()
for framework in FRAMEWORKS:
    st.header(framework_label(framework))
    framework_section(framework)
    st.divider()
