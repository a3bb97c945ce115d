"""The Train page's live view: queued runs, and each running run's curves and progress, redrawn from the DB."""

import pandas as pd
import streamlit as st

from db.run_views import LiveRun, live_runs
from db.session import read_scope
from domain import framework_label
from services.registry import shortfalls
from ui import notices
from ui.auth import job_control
from ui.charts import training_curves
from ui.format import duration_text
from ui.nav import pages
from ui.text import literal
from worker.submit import cancel_job, requeue_job

POLL_S = 2
NOTICES = "train_live"  # where the live view's notices show
WATCH_KEY = "train_watch"  # runs submitted from this browser session, followed until they end


def _title(run: LiveRun) -> str:
    model = framework_label(run.framework)
    return f"Run {run.run_id} · {model} · {run.preset} · `{run.dataset_path}`"


def _cancel_button(run: LiveRun) -> None:
    if run.job_id is None:
        return
    if run.cancel_requested:
        st.caption("Stopping at the next checkpoint…")
        return
    st.button(f"Cancel run {run.run_id}", key=f"train_cancel_{run.run_id}", on_click=_cancel, args=(run.job_id,))


def _cancel(job_id: int) -> None:
    # A callback: it runs before the redraw, which then shows the run stopping.
    notices.later(job_control(cancel_job, job_id), place=NOTICES)


def _continue(job_id: int) -> None:
    notices.later(job_control(requeue_job, job_id), place=NOTICES)


def _epochs_table(run: LiveRun) -> None:
    with st.expander(f"Epochs of run {run.run_id} ({len(run.epochs)})"):
        st.dataframe(
            pd.DataFrame(run.epochs),
            hide_index=True,
            key=f"train_epochs_table_{run.run_id}",
            column_config={
                "lr": st.column_config.NumberColumn("lr", format="%.2e"),
                "duration_s": st.column_config.NumberColumn("seconds", format="%.1f"),
                "images_per_s": st.column_config.NumberColumn("images/s", format="%.1f"),
            },
        )


def _curves(run: LiveRun) -> None:
    if run.epochs:
        st.plotly_chart(training_curves(run.epochs), key=f"train_curves_{run.run_id}")
        _epochs_table(run)


def _running(run: LiveRun) -> None:
    with st.container(border=True):
        st.markdown(f"**{_title(run)}**")
        if run.phase == "preparing":
            st.progress(0.0, text="Loading, de-duplicating and splitting the images…")
        else:
            st.progress(min(run.fraction_done, 1.0), text=literal(run.message) if run.message else "starting…")
        done, elapsed, left = st.columns(3)
        done.metric("Epochs done", f"{len(run.epochs)} / {run.epochs_planned}")
        elapsed.metric("Running for", duration_text(run.seconds_running))
        if run.step is not None:
            left.metric("Now", run.step.capitalize(), help="The epochs are over: " + run.step.message)
        else:
            left.metric(
                "Time left",
                duration_text(run.seconds_left),
                help="Training time left at the pace of the epochs so far; early stopping may end the run sooner. "
                "Calibrating, fitting the check and exporting the model follow the last epoch.",
            )
        _cancel_button(run)
        if not run.epochs:
            st.caption("The curves appear when the first epoch ends.")
        _curves(run)


def _ended(run: LiveRun) -> None:
    with st.container(border=True):
        st.markdown(f"**{_title(run)}**: {run.status}")
        if run.status == "succeeded":
            accuracy = f"{run.val_accuracy:.2%}" if run.val_accuracy is not None else "–"
            if problems := shortfalls(run.val_metrics):
                st.error(
                    f"Finished — not usable: {'; '.join(problems)}. Its model is registered, but making it the "
                    "active one asks for a reason."
                )
            else:
                st.success(f"Finished: validation accuracy {accuracy}.")
            st.page_link(
                pages().leaderboard, label="Compare it on the leaderboard", query_params={"run": str(run.run_id)}
            )
        elif run.status == "failed":
            st.error(f"Failed: {literal(run.error) if run.error else 'no reason recorded'}")
        else:
            st.warning("Cancelled.")
        if run.status != "succeeded" and run.job_id is not None:
            st.button(
                f"Continue run {run.run_id}",
                key=f"train_continue_{run.run_id}",
                on_click=_continue,
                args=(run.job_id,),
                help="Queue the run again: it goes on from its last finished epoch (or starts, if it finished none).",
            )
        _curves(run)


def _queued(runs: list[LiveRun]) -> None:
    rows = [
        {
            "run": r.run_id,
            "job": r.job_id,
            "model": framework_label(r.framework),
            "preset": r.preset,
            "dataset": r.dataset_path,
            "epochs": r.epochs_planned,
            "queued at (UTC)": r.created_at,
        }
        for r in runs
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="train_queued_table")
    for run in runs:
        _cancel_button(run)


@st.fragment(run_every=POLL_S)
def live_view() -> None:
    """Queued and running runs, and the runs submitted from this session; redrawn on its own every few seconds."""
    notices.show(NOTICES)
    with read_scope() as session:
        runs = live_runs(session=session, also=st.session_state.get(WATCH_KEY, []))
    active = [r for r in runs if r.phase in ("preparing", "training")]
    queued = [r for r in runs if r.phase == "queued"]
    ended = [r for r in runs if r.phase not in ("queued", "preparing", "training")]
    st.subheader("Training now")
    if not active:
        st.caption("No run is training.")
    for run in active:
        _running(run)
    st.subheader("Queued")
    if queued:
        _queued(queued)
    else:
        st.caption("No run is waiting.")
    if ended:
        st.subheader("Started here, now finished")
        for run in ended:
            _ended(run)
