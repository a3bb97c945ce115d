"""The live view of training: queued runs, and each running run's curves and progress, redrawn from the DB."""

import pandas as pd
import streamlit as st

from db.run_views import LiveRun, live_runs
from db.session import read_scope
from domain import framework_label
from ui.auth import job_control
from ui.charts import training_curves
from ui.nav import link_to_page
from ui.text import literal
from worker.submit import cancel_job, requeue_job

POLL_S = 2
NOTICE_KEY = "train_cancel_notice"
WATCH_KEY = "train_watch"  # runs submitted from this browser session, followed until they end


def duration_text(seconds: float | None) -> str:
    """A short human reading of a duration: "45 s", "3 min 20 s", "2 h 05 min"."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


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
    st.session_state[NOTICE_KEY] = job_control(cancel_job, job_id)


def _continue(job_id: int) -> None:
    st.session_state[NOTICE_KEY] = job_control(requeue_job, job_id)


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
        left.metric(
            "Time left",
            duration_text(run.seconds_left),
            help="Training time left at the pace of the epochs so far; early stopping may end the run sooner, "
            "and scoring the final model takes a little more.",
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
            st.success(f"Finished: validation accuracy {accuracy}.")
            link_to_page(
                "views/5_Leaderboard.py", label="Compare it on the leaderboard", query_params={"run": str(run.run_id)}
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
    if notice := st.session_state.pop(NOTICE_KEY, None):
        st.info(literal(notice))
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
