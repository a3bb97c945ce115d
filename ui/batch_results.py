"""A batch job's results on the page: counts, class chart, labelled-data scores, filtered table, CSV."""

from collections import Counter

import pandas as pd
import streamlit as st

from db.batches import BatchRow, batch_rows
from db.jobs import get_job
from db.schema import CLASSES
from db.session import read_scope
from domain import FRAMEWORKS, framework_label
from services import records
from services.batch import batch_metrics
from ui.audited import list_shown
from ui.auth import signed_in
from ui.charts import class_counts_chart, confusion_matrix_chart
from ui.text import literal

ANY = "any"
STATUS_LABELS = {
    "done": "done",
    "error": "could not be read",
    "skipped": "skipped (not an image, or not a brain MRI slice)",
}


def frameworks_of(rows: list[BatchRow]) -> list[str]:
    """The frameworks that gave results in this batch, in the usual order."""
    present = {fw for row in rows for fw in row.results}
    return [fw for fw in FRAMEWORKS if fw in present] + sorted(present - set(FRAMEWORKS))


def results_frame(rows: list[BatchRow], frameworks: list[str]) -> pd.DataFrame:
    records = []
    for row in rows:
        record: dict[str, object] = {
            "file": row.rel_path,
            "status": row.status,
            "patient": row.patient_mrn or "",
            "true class": row.true_label or "",
        }
        for fw in frameworks:
            result = row.results.get(fw)
            record[f"{framework_label(fw)}: class"] = result["label"] if result else ""
            record[f"{framework_label(fw)}: confidence"] = result["confidence"] if result else None
        record["needs review"] = row.needs_review if row.status == "done" else None
        record["note / error"] = row.error or ""
        records.append(record)
    return pd.DataFrame(records)


def _scores(rows: list[BatchRow], frameworks: list[str], job_id: int) -> None:
    metrics = batch_metrics(rows=rows, frameworks=frameworks)
    if not metrics:
        return
    labelled = sum(1 for r in rows if r.status == "done" and r.true_label)
    st.markdown(f"**Labelled data**: {labelled} of the images sit in class folders, so the batch is scored.")
    for column, (fw, report) in zip(st.columns(len(metrics)), metrics.items()):
        with column:
            st.metric(
                f"{framework_label(fw)} accuracy",
                f"{report['accuracy']:.1%}",
                help=f"over {report['count']} images",
            )
            st.plotly_chart(
                confusion_matrix_chart(report["confusion_matrix"], report["labels"], title=framework_label(fw)),
                key=f"batch_confusion:{job_id}:{fw}",
            )


def show_results(job_id: int) -> None:
    """Everything recorded for the job's files so far."""
    with read_scope() as session:
        rows = batch_rows(session=session, job_id=job_id)
    if not rows:
        st.info("No file of this job has been recorded yet.")
        return
    frameworks = frameworks_of(rows)
    counts = Counter(row.status for row in rows)
    with read_scope() as session:
        job = get_job(session=session, job_id=job_id)
        note = (job.result or {}).get("ood_check") if job is not None else None
    if note:
        # Whether the images were checked to be brain MRI slices, and with what, or why they were not.
        st.caption(literal(note))
    done, errors, skipped, review = st.columns(4)
    done.metric("Predicted", counts["done"])
    errors.metric("Could not be read", counts["error"])
    skipped.metric(
        "Skipped",
        counts["skipped"],
        help="Files that are not images, and images the check says are not brain MRI slices: no tumor class is "
        "recorded for them. The table's last column says which.",
    )
    review.metric("Need review", sum(1 for r in rows if r.status == "done" and r.needs_review))

    predicted = [r for r in rows if r.status == "done"]
    if predicted:
        per_model = {
            framework_label(fw): {
                c: sum(1 for r in predicted if fw in r.results and r.results[fw]["label"] == c) for c in CLASSES
            }
            for fw in frameworks
        }
        st.plotly_chart(class_counts_chart(per_model, title="Predicted classes"), key=f"batch_counts:{job_id}")
    _scores(rows, frameworks, job_id)

    st.markdown("**Files**")
    status_col, class_col, review_col = st.columns(3)
    status = status_col.selectbox(
        "Status",
        [ANY, *STATUS_LABELS],
        format_func=lambda s: STATUS_LABELS.get(s, s),
        key=f"batch_filter_status:{job_id}",
    )
    label = class_col.selectbox("Predicted class (by any model)", [ANY, *CLASSES], key=f"batch_filter_class:{job_id}")
    review_only = review_col.checkbox("Only those that need review", key=f"batch_filter_review:{job_id}")
    with read_scope() as session:
        shown = batch_rows(
            session=session,
            job_id=job_id,
            status=None if status == ANY else status,
            label=None if label == ANY else label,
            needs_review=True if review_only else None,
        )
    actor = signed_in()
    if actor is not None and job is not None and job.submitted_by != actor.user_id:
        # Another user's results are a list of patient records this reader browsed.
        wanted = {"status": None if status == ANY else status, "class": None if label == ANY else label}
        filters = {**wanted, "needs review": review_only}
        list_shown(actor, f"job {job_id} results", filters=filters, page=1, shown=len(shown), total=len(rows))
    st.caption(f"{len(shown)} of {len(rows)} files")
    st.dataframe(
        results_frame(shown, frameworks),
        hide_index=True,
        key=f"batch_table:{job_id}",
        column_config={
            f"{framework_label(fw)}: confidence": st.column_config.NumberColumn(format="percent") for fw in frameworks
        },
    )
    st.download_button(
        f"Download these {len(shown)} rows as CSV",
        # Runs when clicked, outside the page's run: the service checks this actor's session again then.
        data=lambda: records.export_batch(actor, job_id=job_id, rows=shown, frameworks=frameworks),
        file_name=f"batch-{job_id}.csv",
        mime="text/csv",
        key=f"batch_csv:{job_id}",
        on_click="ignore",
    )
