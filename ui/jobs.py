"""A background job's progress panel, redrawn from the jobs table every few seconds on its own."""

import uuid
from dataclasses import dataclass
from datetime import datetime

import streamlit as st

from db.jobs import get_job
from db.session import read_scope
from ui.auth import job_control, signed_in
from ui.text import literal
from worker.jobs import ERROR_DETAIL
from worker.submit import cancel_job

POLL_S = 2
ACTIVE = ("queued", "running")
STATUS_TEXT = {
    "queued": "waiting for a worker",
    "running": "running",
    "succeeded": "finished",
    "failed": "failed",
    "cancelled": "cancelled",
}


@dataclass(frozen=True)
class JobView:
    """What the panel shows of a job, read in one short transaction."""

    job_id: int
    kind: str
    status: str
    current: int
    total: int
    message: str | None
    error: str | None
    cancel_requested: bool
    created_at: datetime
    detail: str | None = None  # what lies behind a failure's message, for admins (worker.jobs.ERROR_DETAIL)

    @property
    def fraction(self) -> float:
        if self.status == "succeeded":
            return 1.0
        return min(self.current / self.total, 1.0) if self.total else 0.0


def job_view(job_id: int) -> JobView | None:
    with read_scope() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:
            return None
        return JobView(
            job.id,
            job.kind,
            job.status,
            job.progress_current,
            job.progress_total,
            job.message,
            job.error,
            job.cancel_requested,
            job.created_at,
            (job.result or {}).get(ERROR_DETAIL) if job.status == "failed" else None,
        )


def _cancel(job_id: int, notice_key: str) -> None:
    # A callback: it runs before the redraw, which then shows the job stopping.
    st.session_state[notice_key] = job_control(cancel_job, job_id)


@st.fragment(run_every=POLL_S)
def job_panel(job_id: int, *, key: str) -> None:
    """Status, a progress bar with the job's own message, its error, and a cancel button while it runs.

    When the job ends while the panel watches, the whole page runs again so that its results appear.
    """
    job = job_view(job_id)
    if job is None:
        st.warning(f"Job {job_id} does not exist.")
        return
    seen_key, notice_key = f"{key}:seen:{job_id}", f"{key}:notice:{job_id}"
    seen = st.session_state.get(seen_key)
    st.session_state[seen_key] = job.status
    with st.container(border=True):
        st.markdown(f"**Job {job.job_id}** · {job.kind} · {STATUS_TEXT.get(job.status, job.status)}")
        steps = f"{job.current}/{job.total}" if job.total else STATUS_TEXT.get(job.status, job.status)
        st.progress(job.fraction, text=literal(job.message) if job.message else steps)
        if notice := st.session_state.pop(notice_key, None):
            st.info(literal(notice))
        if job.status == "failed":
            st.error(literal(job.error) if job.error else "The job failed without a recorded reason.")
            if job.detail and (actor := signed_in()) is not None and actor.is_admin:
                with st.expander("Details for admins"):
                    st.code(job.detail, language=None, wrap_lines=True)
        elif job.status in ACTIVE and job.cancel_requested:
            st.caption("Stopping at the next checkpoint…")
        elif job.status in ACTIVE:
            st.button(
                f"Cancel job {job.job_id}", key=f"{key}:cancel:{job_id}", on_click=_cancel, args=(job_id, notice_key)
            )
    if seen in ACTIVE and job.status not in ACTIVE:
        st.rerun(scope="app")


def submission_key(form: str, *, clicked: bool) -> str:
    """The idempotency key of `form`'s submission: kept while its button reads pressed run after run (a double
    click sends two), renewed by the first run where it doesn't, so a later submission is a new job."""
    state_key = f"submission_key:{form}"
    if not clicked or state_key not in st.session_state:
        st.session_state[state_key] = uuid.uuid4().hex
    return st.session_state[state_key]
