"""Home: a person's own work (their recent patients, their jobs); for admins also whether the system is up, what
is stored, and every user's background jobs. Nothing here shows a clinician a server path or a database URL."""

import pandas as pd
import streamlit as st
from sqlalchemy.engine import make_url

from db.home import recent_patients
from db.jobs import recent_jobs
from db.runs import get_active_model
from db.schema import Job
from db.session import read_scope
from db.stats import table_counts
from domain import FRAMEWORKS, framework_label
from services.auth import Actor
from services.reads import awaiting_reads
from settings import get_settings
from ui import errors, notices
from ui.auth import job_control, require
from ui.nav import pages
from ui.text import literal
from worker.submit import QueueUnavailable, cancel_job, submit_job, worker_status

COUNT_LABELS = {"patients": "Patients", "scans": "Scans", "predictions": "Predictions", "runs": "Training runs"}
JOB_NOTICES = "home_jobs"
RECENT_PATIENTS = 10


def system_status() -> None:
    """The worker, Redis and the database (admins: the page shows where they run)."""
    st.subheader("System")
    status = worker_status(timeout_s=0.5)
    worker_col, redis_col, db_col = st.columns(3)
    with worker_col, st.container(border=True):
        if status["workers"]:
            st.markdown(f"**:green[:material/check_circle:] Worker online**  \n{', '.join(status['workers'])}")
        else:
            st.markdown(
                "**:red[:material/cancel:] No worker online**  \n"
                "Start one with `make worker`, or everything with `make run`."
            )
    with redis_col, st.container(border=True):
        if status["redis_ok"]:
            st.markdown("**:green[:material/check_circle:] Redis reachable**")
        else:
            st.markdown(f"**:red[:material/cancel:] Redis unreachable**  \n{literal(status['redis_error'])}")
    database = make_url(get_settings().database_url).render_as_string(hide_password=True)
    with db_col, st.container(border=True):
        st.markdown(f"**Database**  \n`{database}`")


def models_in_use() -> None:
    st.subheader("Active models")
    with read_scope() as session:
        active = {framework: get_active_model(session=session, framework=framework) for framework in FRAMEWORKS}
    for column, framework in zip(st.columns(len(FRAMEWORKS)), FRAMEWORKS, strict=True):
        version = active[framework]
        with column, st.container(border=True):
            if version is None:
                st.markdown(f"**{framework_label(framework)}**  \nnone active yet: train one and promote it.")
            else:
                since = f"{version.activated_at:%Y-%m-%d %H:%M} UTC" if version.activated_at else "unknown"
                st.markdown(
                    f"**{framework_label(framework)}**  \n{literal(version.name)} (version {version.id}), "
                    f"active since {since}"
                )


def stored() -> None:
    st.subheader("Stored")
    with read_scope() as session:
        counts = table_counts(session=session)
    for column, (key, label) in zip(st.columns(len(COUNT_LABELS)), COUNT_LABELS.items(), strict=True):
        column.metric(label, counts[key])


def awaiting(actor: Actor) -> None:
    """How many scans wait for a clinician's read, flagged ones counted apart, and the way to the queue."""
    st.subheader("Awaiting a read")
    everyone, theirs = awaiting_reads(user_id=actor.user_id)
    mine = (
        f" {theirs.awaiting} of them come from batch jobs you started."
        if theirs is not None and theirs.awaiting
        else ""
    )
    st.markdown(
        f"{everyone.awaiting} scan(s) await a clinician's read, {everyone.flagged} of them flagged for review.{mine}"
        if everyone.awaiting
        else "No scan awaits a read."
    )
    st.page_link(pages().review, label="Open the review queue", icon=":material/fact_check:")


def my_patients(actor: Actor) -> None:
    """The patients this person saved scans for, opened, reviewed or exported lately, each a link to its history."""
    st.subheader("Your recent patients")
    with read_scope() as session:
        patients = recent_patients(session=session, user_id=actor.user_id, limit=RECENT_PATIENTS)
    if not patients:
        st.caption("None yet: the patients whose records you save to, open or review on the other pages show here.")
        return
    for patient in patients:
        scans = f"{patient.scans} scan(s)" + (
            f", the last on {patient.last_scan_at:%Y-%m-%d}" if patient.last_scan_at else ""
        )
        worked = f"you last worked on it {patient.last_worked_at:%Y-%m-%d %H:%M} UTC"
        st.page_link(
            pages().history,
            label=f"{literal(patient.mrn)} · {scans} · {worked}",
            query_params={"patient": patient.mrn},
            icon=":material/person:",
        )


def _jobs_frame(jobs: list[Job], *, with_errors: bool) -> pd.DataFrame:
    rows = []
    for job in jobs:
        row = {
            "job": job.id,
            "kind": job.kind,
            "status": job.status,
            "progress": job.progress_current / job.progress_total if job.progress_total else 0.0,
            "steps": f"{job.progress_current}/{job.progress_total}" if job.progress_total else "",
            # A job's error can name server paths: the admins' table shows it, a clinician's the Batch page's words.
            "message": (job.error if with_errors else None) or job.message or "",
            "created (UTC)": job.created_at,
            "finished (UTC)": job.finished_at,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _cancel(job_id: int) -> None:
    notices.later(job_control(cancel_job, job_id), place=JOB_NOTICES)


@st.fragment(run_every=3)
def jobs_panel(actor: Actor) -> None:
    """The latest jobs (an admin's: everyone's; a clinician's: their own), redrawn on its own every few seconds so
    progress moves without reloading the page."""
    notices.show(JOB_NOTICES)
    with read_scope() as session:
        jobs = recent_jobs(session=session, limit=15, submitted_by=None if actor.is_admin else actor.user_id)
    if not jobs:
        st.info("No background jobs yet." if actor.is_admin else "You have started no background job yet.")
        return
    st.dataframe(
        _jobs_frame(jobs, with_errors=actor.is_admin),
        hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)},
    )
    for job in (job for job in jobs if job.status in ("queued", "running")):
        st.button(
            f"Cancel job {job.id} ({job.kind}, {job.status})",
            key=f"cancel-{job.id}",
            on_click=_cancel,
            args=(job.id,),
        )
    if not actor.is_admin and any(job.kind == "batch" for job in jobs):
        st.page_link(
            pages().batch, label="Your batch jobs' results are on the Batch page", icon=":material/folder_open:"
        )


def selfcheck(actor: Actor) -> None:
    if st.button("Run a self-check job", key="selfcheck", help="Checks the database, storage folders and model files."):
        with errors.shown("The self-check was not started: "):
            try:
                st.session_state["selfcheck_job"] = submit_job("selfcheck", {}, actor=actor)
            except QueueUnavailable as exc:
                st.error(f"The self-check was not started: {literal(exc)}")
    if "selfcheck_job" in st.session_state:
        st.caption(f"Self-check submitted as job {st.session_state['selfcheck_job']}; it is listed below.")


def main() -> None:
    actor = require()
    st.title("Brain tumor MRI classification")
    if actor.is_admin:
        system_status()
    awaiting(actor)
    models_in_use()
    my_patients(actor)
    if actor.is_admin:
        stored()
        st.subheader("Background jobs")
        selfcheck(actor)
    else:
        st.subheader("Your background jobs")
    jobs_panel(actor)


main()
