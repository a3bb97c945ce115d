"""Batch: predict every scan of a server folder or an uploaded zip as a background job, then browse the results."""

import streamlit as st

from db.jobs import recent_jobs
from db.runs import get_active_model, list_model_versions
from db.session import read_scope
from domain import FRAMEWORKS, UserError, framework_label
from services.batch_input import (
    PATIENT_MODES,
    BatchInputError,
    Listing,
    check_patient_mode,
    check_zip,
    discard_upload,
    folder_source,
    list_folder,
    open_zip,
    resolve_folder,
    source_label,
    true_label,
    zip_source,
)
from settings import SAMPLE_DIR, get_settings
from ui.auth import job_control, require, signed_in
from ui.batch_results import show_results
from ui.jobs import job_panel, job_view, submission_key
from worker.submit import QueueUnavailable, requeue_job, submit_batch

FOLDER, ZIP = "A folder on the server", "An uploaded .zip"
NOT_USED = 0  # in a model choice: this framework is left out
PICK_KEY, NOTICE_KEY = "batch_pick", "batch_notice"
SUBMITTED_KEY = "batch_submitted"  # (idempotency key, job id) of this session's last submission
JOBS_LISTED = 50
SKIPPED_SHOWN = 200


@st.cache_data(ttl=10, max_entries=16, show_spinner="Looking through the folder…")
def folder_listing(folder: str) -> Listing:
    return list_folder(resolve_folder(folder, roots=get_settings().allowed_data_roots))


def show_listing(listing: Listing) -> None:
    labelled = sum(1 for p in listing.images if true_label(p))
    text = f"{len(listing.images)} image(s) to predict"
    if labelled:
        text += f", {labelled} of them in class folders (the batch will be scored against them)"
    st.success(text + (f"; {len(listing.skipped)} other file(s) will be skipped." if listing.skipped else "."))
    if listing.skipped:
        with st.expander(f"Skipped files ({len(listing.skipped)})"):
            st.dataframe([{"file": path, "why": why} for path, why in listing.skipped[:SKIPPED_SHOWN]], hide_index=True)
            if len(listing.skipped) > SKIPPED_SHOWN:
                st.caption(f"…and {len(listing.skipped) - SKIPPED_SHOWN} more.")


def _use_sample() -> None:
    st.session_state["batch_folder"] = str(SAMPLE_DIR)


def folder_input() -> bool:
    """The folder field with what it holds or why it cannot be used; True when it can be submitted."""
    roots = get_settings().allowed_data_roots
    st.caption("Folders under: " + ", ".join(f"`{root}`" for root in roots))
    folder = st.text_input("Folder path", key="batch_folder", placeholder=str(roots[0] / "…") if roots else "/…")
    if any(SAMPLE_DIR.resolve().is_relative_to(root.resolve()) for root in roots):
        st.button("Use the shipped sample folder", key="batch_use_sample", on_click=_use_sample)
    if not folder.strip():
        return False
    try:
        show_listing(folder_listing(folder.strip()))
    except BatchInputError as exc:
        st.error(str(exc))
        return False
    return True


def zip_input() -> bool:
    """The zip uploader with what the zip holds or why it is refused; True when it can be submitted."""
    settings = get_settings()
    upload = st.file_uploader(
        "Zip of scans",
        type=["zip"],
        key="batch_zip",
        help=f"Up to {settings.max_zip_mb} MB and {settings.max_zip_files:,} files.",
    )
    if upload is None:
        return False
    try:
        with open_zip(upload.getvalue(), settings=settings) as archive:
            files = check_zip(archive, settings=settings)
    except BatchInputError as exc:
        st.error(str(exc))
        return False
    st.success(f"{len(files)} file(s) in the zip; it is unpacked and checked file by file when you start the batch.")
    return True


def model_choice() -> list[int]:
    """A model version per framework (the active one unless another is chosen); their ids."""
    with read_scope() as session:
        versions = {
            fw: [(v.id, v.name) for v in list_model_versions(session=session, framework=fw)] for fw in FRAMEWORKS
        }
        active = {fw: (v.id if (v := get_active_model(session=session, framework=fw)) else None) for fw in FRAMEWORKS}
    chosen = []
    for column, fw in zip(st.columns(len(FRAMEWORKS)), FRAMEWORKS):
        names = {vid: f"{name} (version {vid}{', active' if vid == active[fw] else ''})" for vid, name in versions[fw]}
        options = [vid for vid, _ in versions[fw]] + [NOT_USED]
        default = options.index(active[fw]) if active[fw] in options else len(options) - 1
        picked = column.selectbox(
            framework_label(fw),
            options,
            index=default,
            format_func=lambda v, names=names: names.get(v, "not used"),
            key=f"batch_model_{fw}",
        )
        if picked != NOT_USED:
            chosen.append(picked)
    return chosen


def submit(source_kind: str, patient_mode: str, patient_mrn: str | None, model_ids: list[int], key: str) -> None:
    settings = get_settings()
    source = None
    if (earlier := st.session_state.get(SUBMITTED_KEY)) and earlier[0] == key:
        st.session_state[PICK_KEY] = earlier[1]  # a second click of the same submission: nothing unpacked again
        return
    try:
        check_patient_mode(patient_mode, patient_mrn)
        if source_kind == FOLDER:
            source = folder_source(st.session_state["batch_folder"], settings=settings)
        else:
            upload = st.session_state["batch_zip"]
            with st.spinner("Unpacking the zip…"):
                source = zip_source(upload.getvalue(), upload.name, settings=settings)
        job_id = submit_batch(
            source=source,
            patient_mode=patient_mode,
            patient_mrn=patient_mrn,
            model_version_ids=model_ids,
            actor=signed_in(),
            idempotency_key=key,
        )
    except (BatchInputError, UserError) as exc:
        if source is not None and source["source"] == "zip":
            discard_upload(source["upload"], settings=settings)
        st.error(str(exc))
        return
    except QueueUnavailable as exc:
        # The job is recorded as failed with this reason; once the queue is back it can be run again.
        st.error(str(exc))
        return
    # Set before the job picker is drawn further down this run, so it opens on the new job.
    st.session_state[PICK_KEY] = job_id
    st.session_state[SUBMITTED_KEY] = (key, job_id)


def new_batch() -> None:
    st.subheader("New batch")
    source_kind = st.radio("Scans from", [FOLDER, ZIP], horizontal=True, key="batch_source")
    ready = folder_input() if source_kind == FOLDER else zip_input()
    patient_mode = st.radio(
        "Patient of each scan", list(PATIENT_MODES), format_func=PATIENT_MODES.get, key="batch_patient_mode"
    )
    patient_mrn = None
    if patient_mode == "single":
        patient_mrn = st.text_input("Patient id for the whole batch", max_chars=64, key="batch_patient_id")
    st.markdown("**Models**")
    model_ids = model_choice()
    if not model_ids:
        st.warning("Choose at least one model; if none is registered, train one on the Train page.")
    clicked = st.button("Start the batch", type="primary", disabled=not (ready and model_ids), key="batch_submit")
    key = submission_key("batch", clicked=clicked)
    if clicked:
        submit(source_kind, patient_mode, patient_mrn, model_ids, key)


def _rerun(job_id: int) -> None:
    st.session_state[NOTICE_KEY] = job_control(requeue_job, job_id)


def chosen_job() -> int | None:
    """The job whose progress and results are shown: the one just started, the link's, or one picked."""
    with read_scope() as session:
        jobs = {
            job.id: f"Job {job.id} · {job.created_at:%Y-%m-%d %H:%M} UTC · {source_label(job.params or {})}"
            for job in recent_jobs(session=session, limit=JOBS_LISTED, kind="batch")
        }
    if not jobs:
        st.info("No batch has been run yet.")
        return None
    if st.session_state.get(PICK_KEY) not in jobs:
        linked = st.query_params.get("job", "")
        st.session_state[PICK_KEY] = int(linked) if linked.isdigit() and int(linked) in jobs else next(iter(jobs))
    job_id = st.selectbox("Batch job", list(jobs), format_func=jobs.get, key=PICK_KEY)
    st.query_params["job"] = str(job_id)
    return job_id


def main() -> None:
    require()
    st.title("Predict a folder of scans")
    with st.container(border=True):
        new_batch()
    st.subheader("Batch jobs")
    job_id = chosen_job()
    if job_id is None:
        return
    job_panel(job_id, key="batch_panel")
    if notice := st.session_state.pop(NOTICE_KEY, None):
        st.info(notice)
    view = job_view(job_id)
    if view is not None and view.status in ("failed", "cancelled"):
        st.button(
            f"Re-run job {job_id}",
            key=f"batch_rerun:{job_id}",
            on_click=_rerun,
            args=(job_id,),
            help="Runs the job again under the same id: the files it already did are kept and skipped.",
        )
    show_results(job_id)


main()
