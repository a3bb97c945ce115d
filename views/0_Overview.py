"""Home: is the system up, which models are active, what is stored, and what the background jobs are doing."""

import pandas as pd
import streamlit as st
from sqlalchemy.engine import make_url

from db.jobs import recent_jobs
from db.runs import get_active_model
from db.schema import Job
from db.session import read_scope
from db.stats import table_counts
from domain import FRAMEWORKS, UserError, framework_label
from services.reads import awaiting_reads
from settings import get_settings
from ui.auth import job_control, require
from ui.nav import link_to_page
from worker.submit import QueueUnavailable, cancel_job, submit_job, worker_status

COUNT_LABELS = {"patients": "Patients", "scans": "Scans", "predictions": "Predictions", "runs": "Training runs"}

ACTOR = require()
st.title("Brain tumor MRI classification")

st.subheader("Awaiting a read")
everyone, theirs = awaiting_reads(user_id=ACTOR.user_id)
mine = f" {theirs.awaiting} of them come from batch jobs you started." if theirs is not None and theirs.awaiting else ""
st.markdown(
    f"{everyone.awaiting} scan(s) await a clinician's read, {everyone.flagged} of them flagged for review.{mine}"
    if everyone.awaiting
    else "No scan awaits a read."
)
link_to_page("views/9_Review.py", label="Open the review queue", icon=":material/fact_check:")

settings = get_settings()
database = make_url(settings.database_url).render_as_string(hide_password=True)
with read_scope() as session:
    counts = table_counts(session=session)
    active = {framework: get_active_model(session=session, framework=framework) for framework in FRAMEWORKS}

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
        st.markdown(f"**:red[:material/cancel:] Redis unreachable**  \n{status['redis_error']}")
with db_col, st.container(border=True):
    st.markdown(f"**Database**  \n`{database}`")

st.subheader("Active models")
for column, framework in zip(st.columns(len(FRAMEWORKS)), FRAMEWORKS, strict=True):
    version = active[framework]
    with column, st.container(border=True):
        if version is None:
            st.markdown(f"**{framework_label(framework)}**  \nnone active yet: train one and promote it.")
        else:
            since = f"{version.activated_at:%Y-%m-%d %H:%M} UTC" if version.activated_at else "unknown"
            st.markdown(
                f"**{framework_label(framework)}**  \n{version.name} (version {version.id}), active since {since}"
            )

st.subheader("Stored")
for column, (key, label) in zip(st.columns(len(COUNT_LABELS)), COUNT_LABELS.items(), strict=True):
    column.metric(label, counts[key])

st.subheader("Background jobs")
if st.button("Run a self-check job", key="selfcheck", help="Checks the database, storage folders and model files."):
    try:
        st.session_state["selfcheck_job"] = submit_job("selfcheck", {}, actor=ACTOR)
    except (QueueUnavailable, UserError) as exc:
        st.error(str(exc))
if "selfcheck_job" in st.session_state:
    st.caption(f"Self-check submitted as job {st.session_state['selfcheck_job']}; it is listed below.")


def _jobs_frame(jobs: list[Job]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": job.id,
                "kind": job.kind,
                "status": job.status,
                "progress": job.progress_current / job.progress_total if job.progress_total else 0.0,
                "steps": f"{job.progress_current}/{job.progress_total}" if job.progress_total else "",
                "message / error": job.error or job.message or "",
                "created (UTC)": job.created_at,
                "finished (UTC)": job.finished_at,
            }
            for job in jobs
        ]
    )


@st.fragment(run_every=3)
def jobs_panel() -> None:
    """The latest jobs, redrawn on its own every few seconds so progress moves without reloading the page."""
    if notice := st.session_state.pop("cancel_notice", None):
        st.info(notice)
    with read_scope() as session:
        jobs = recent_jobs(session=session, limit=15)
    if not jobs:
        st.info("No background jobs yet.")
        return
    st.dataframe(
        _jobs_frame(jobs),
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


def _cancel(job_id: int) -> None:
    st.session_state["cancel_notice"] = job_control(cancel_job, job_id)


jobs_panel()
