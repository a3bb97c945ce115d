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
from services.batch_patients import (
    Inventory,
    class_folders_as_patients,
    default_mode,
    folder_inventory,
    modes_for,
    preview,
    zip_inventory,
)
from settings import SAMPLE_DIR, get_settings
from ui.auth import job_control, require
from ui.batch_results import show_results
from ui.jobs import job_panel, job_view, submission_key
from ui.text import literal
from worker.submit import QueueUnavailable, requeue_job, submit_batch

FOLDER, ZIP = "A folder on the server", "An uploaded .zip"
NOT_USED = 0  # in a model choice: this framework is left out
PICK_KEY, NOTICE_KEY = "batch_pick", "batch_notice"
SUBMITTED_KEY = "batch_submitted"  # (idempotency key, job id) of this session's last submission
JOBS_LISTED = 50
SKIPPED_SHOWN = 200


MODE_KEY, MODE_FOR_KEY = "batch_patient_mode", "batch_patient_mode_for"  # the mode, and the input it was fitted to
SHOWN_REFUSED = 20


@st.cache_data(ttl=10, max_entries=16, show_spinner="Looking through the folder…")
def folder_listing(folder: str) -> tuple[Listing, Inventory]:
    listing = list_folder(resolve_folder(folder, roots=get_settings().allowed_data_roots))
    return listing, folder_inventory(listing)


def show_listing(listing: Listing) -> bool:
    """What the folder holds; False (and why) when it holds nothing to predict."""
    if not listing.images:
        st.error(
            "This folder holds no JPEG, PNG or DICOM file to predict"
            + (f", only {len(listing.skipped)} other file(s)." if listing.skipped else ": it is empty.")
        )
        skipped_files(listing)
        return False
    labelled = sum(1 for p in listing.images if true_label(p))
    text = f"{len(listing.images)} image(s) to predict"
    if labelled:
        text += f", {labelled} of them in class folders (the batch will be scored against them)"
    st.success(text + (f"; {len(listing.skipped)} other file(s) will be skipped." if listing.skipped else "."))
    skipped_files(listing)
    return True


def skipped_files(listing: Listing) -> None:
    if listing.skipped:
        with st.expander(f"Skipped files ({len(listing.skipped)})"):
            st.dataframe([{"file": path, "why": why} for path, why in listing.skipped[:SKIPPED_SHOWN]], hide_index=True)
            if len(listing.skipped) > SKIPPED_SHOWN:
                st.caption(f"…and {len(listing.skipped) - SKIPPED_SHOWN} more.")


def _use_sample() -> None:
    st.session_state["batch_folder"] = str(SAMPLE_DIR)


def folder_input() -> tuple[str, Inventory] | None:
    """The folder field with what it holds or why it cannot be used; (the input, its images) when it can be
    submitted."""
    roots = get_settings().allowed_data_roots
    st.caption("Folders under: " + ", ".join(f"`{root}`" for root in roots))
    folder = st.text_input("Folder path", key="batch_folder", placeholder=str(roots[0] / "…") if roots else "/…")
    if any(SAMPLE_DIR.resolve().is_relative_to(root.resolve()) for root in roots):
        st.button("Use the shipped sample folder", key="batch_use_sample", on_click=_use_sample)
    if not folder.strip():
        return None
    try:
        listing, inventory = folder_listing(folder.strip())
    except BatchInputError as exc:
        st.error(literal(exc))
        return None
    return (f"folder:{listing.root}", inventory) if show_listing(listing) else None


def zip_input() -> tuple[str, Inventory] | None:
    """The zip uploader with what the zip holds or why it is refused; (the input, its images) when it can be
    submitted."""
    settings = get_settings()
    upload = st.file_uploader(
        "Zip of scans",
        type=["zip"],
        key="batch_zip",
        help=f"Up to {settings.max_zip_mb} MB and {settings.max_zip_files:,} files.",
    )
    if upload is None:
        return None
    try:
        inventory = zip_contents(upload.file_id, upload.getvalue())
    except BatchInputError as exc:
        st.error(literal(exc))
        return None
    if not inventory.images:
        st.error("This zip holds no JPEG, PNG or DICOM file to predict.")
        return None
    st.success(
        f"{len(inventory.images)} image(s) in the zip; it is unpacked and each file is checked when the batch starts."
    )
    return f"zip:{upload.file_id}", inventory


@st.cache_data(max_entries=4, show_spinner="Looking through the zip…")
def zip_contents(file_id: str, _data: bytes) -> Inventory:
    """The zip's images and their DICOM PatientIDs (cached per upload: the bytes do not change)."""
    settings = get_settings()
    with open_zip(_data, settings=settings) as archive:
        return zip_inventory(archive, check_zip(archive, settings=settings))


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
            actor=require(),
            idempotency_key=key,
        )
    except (BatchInputError, UserError) as exc:
        if source is not None and source["source"] == "zip":
            discard_upload(source["upload"], settings=settings)
        st.error(literal(exc))
        return
    except QueueUnavailable as exc:
        # The job is recorded as failed with this reason; once the queue is back it can be run again.
        st.error(literal(exc))
        return
    # Set before the job picker is drawn further down this run, so it opens on the new job.
    st.session_state[PICK_KEY] = job_id
    st.session_state[SUBMITTED_KEY] = (key, job_id)


def patient_choice(given: tuple[str, Inventory] | None) -> tuple[str, str | None, bool]:
    """The patient mode (fitted to the input when it changes), the batch-wide id, and whether they can be used;
    says before Start how many images would get no patient."""
    inventory = given[1] if given else Inventory(images=())
    modes = modes_for(inventory) if given else dict(PATIENT_MODES)
    fitted_to = given[0] if given else None
    if st.session_state.get(MODE_FOR_KEY) != fitted_to or st.session_state.get(MODE_KEY) not in modes:
        st.session_state[MODE_KEY] = default_mode(inventory)
        st.session_state[MODE_FOR_KEY] = fitted_to
    mode = st.radio("Patient of each scan", list(modes), format_func=modes.get, key=MODE_KEY)
    mrn = None
    if mode == "single":
        mrn = st.text_input("Patient id for the whole batch", max_chars=64, key="batch_patient_id")
    if given is None:
        return mode, mrn, False
    if mode == "single" and not (mrn or "").strip():
        st.caption("Enter the patient id every scan of this batch belongs to.")
        return mode, mrn, False
    try:
        outcome = preview(inventory, mode, mrn)
    except BatchInputError as exc:
        st.error(str(exc))
        return mode, mrn, False
    if outcome.without_patient:
        st.info(
            f"{outcome.without_patient} of {outcome.images} image(s) would be saved without a patient; they wait "
            "in the Review queue, where a patient can be assigned."
        )
    if outcome.patients:
        st.caption(f"The others go to {outcome.patients} patient(s), each matched to an existing record by its id.")
    if outcome.unknown:
        st.caption(
            f"{outcome.unknown} DICOM file(s) could not be read ahead; their PatientID is read when the batch runs."
        )
    if mode == "folder" and class_folders_as_patients(inventory):
        st.warning("The first folder level is named like tumor classes: those names would become patient ids.")
    if outcome.refused:
        st.warning(
            f"{len(outcome.refused)} image(s) carry a patient id that breaks the rule, so they would not be saved."
        )
        with st.expander("Which, and why"):
            st.dataframe([{"file": path, "why": why} for path, why in outcome.refused[:SHOWN_REFUSED]], hide_index=True)
    return mode, mrn, True


def new_batch() -> None:
    st.subheader("New batch")
    source_kind = st.radio("Scans from", [FOLDER, ZIP], horizontal=True, key="batch_source")
    given = folder_input() if source_kind == FOLDER else zip_input()
    patient_mode, patient_mrn, patients_ok = patient_choice(given)
    ready = given is not None and patients_ok
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
    actor = require()
    st.title("Predict a folder of scans")
    with st.container(border=True):
        new_batch()
    st.subheader("Batch jobs")
    job_id = chosen_job()
    if job_id is None:
        return
    job_panel(job_id, key="batch_panel")
    if notice := st.session_state.pop(NOTICE_KEY, None):
        st.info(literal(notice))
    view = job_view(job_id)
    if view is not None and view.status in ("failed", "cancelled"):
        st.button(
            f"Re-run job {job_id}",
            key=f"batch_rerun:{job_id}",
            on_click=_rerun,
            args=(job_id,),
            help="Runs the job again under the same id: the files it already did are kept and skipped.",
        )
    show_results(job_id, actor)


main()
