"""A batch job's results on the page: counts, class chart, labelled-data scores, filtered table, CSV.

The table says why each file was flagged or skipped, shows its thumbnail, and opens its scan in the review
queue. Its CSV is the download button below it (audited); the table's own export is turned off for the whole
app (client.disableDataExport), since it could not be audited.
"""

import base64
import hashlib
import math
from collections import Counter

import pandas as pd
import streamlit as st

from db.batches import BatchRow, batch_rows
from db.jobs import get_job
from db.schema import CLASSES
from db.session import read_scope
from domain import FRAMEWORKS, ReadLabel, TumorClass, framework_label
from services import records
from services.auth import Actor
from services.batch import batch_metrics
from services.diagnosis import answer_rules
from services.reports import batch_row_answer, batch_row_reason
from settings import get_settings
from ui.audited import list_shown
from ui.charts import class_counts_chart, confusion_matrix_chart
from ui.history_view import thumbnail
from ui.nav import pages
from ui.text import literal

ANY = "any"
STATUS_LABELS = {
    "done": "done",
    "error": "could not be read",
    "skipped": "skipped (not an image, or not a brain MRI slice)",
}
ROWS_PER_PAGE = 50  # each shown row draws a thumbnail
THUMBNAIL_SIDE = 64


def frameworks_of(rows: list[BatchRow]) -> list[str]:
    """The frameworks that gave results in this batch, in the usual order."""
    present = {fw for row in rows for fw in row.results}
    return [fw for fw in FRAMEWORKS if fw in present] + sorted(present - set(FRAMEWORKS))


def _image_url(row: BatchRow) -> str | None:
    png = thumbnail(row.file_path, side=THUMBNAIL_SIDE) if row.file_path else None
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def results_frame(rows: list[BatchRow], frameworks: list[str], threshold: float) -> pd.DataFrame:
    """One row per file; where the batch has two models, their one answer before each model's own."""
    records = []
    rule_of = answer_rules()
    for row in rows:
        record: dict[str, object] = {
            "image": _image_url(row),
            "file": row.rel_path,
            "status": row.status,
            "flagged": row.needs_review if row.status == "done" else None,
            "why": batch_row_reason(row, threshold, rule_of),
            "patient": row.patient_mrn or "",
            "true class": row.true_label or "",
        }
        if len(frameworks) > 1:
            answer = batch_row_answer(row, rule_of)
            record["answer"] = TumorClass(answer.label).label if answer else ""
            record["answer: confidence"] = answer.confidence if answer else None
        for fw in frameworks:
            result = row.results.get(fw)
            record[f"{framework_label(fw)}: answer"] = TumorClass(result["label"]).label if result else ""
            record[f"{framework_label(fw)}: confidence"] = result["confidence"] if result else None
        record["read"] = ReadLabel(row.read_label).label if row.read_label else ""
        record["scan"] = row.scan_id
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


def show_results(job_id: int, actor: Actor) -> None:
    """Everything recorded for the job's files so far; `actor` is who downloads the CSV (a download runs outside
    the page's script run, where no session state can tell who is signed in)."""
    with read_scope() as session:
        rows = batch_rows(session=session, job_id=job_id)
    if not rows:
        st.info("No file of this job has been recorded yet.")
        return
    frameworks = frameworks_of(rows)
    counts = Counter(row.status for row in rows)
    with read_scope() as session:
        job = get_job(session=session, job_id=job_id)
        result = (job.result or {}) if job is not None else {}
    note = result.get("ood_check")
    threshold = float(result.get("threshold", get_settings().confidence_threshold))
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
    unread = sum(1 for r in rows if r.scan_id is not None and r.read_label is None)
    if unread:
        st.page_link(
            pages().review,
            label=f"Read this job's {unread} scan(s) awaiting a read in the review queue",
            query_params={"job": str(job_id)},
            icon=":material/fact_check:",
        )

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
    if job is not None and job.submitted_by != actor.user_id:
        # Another user's results are a list of patient records this reader browsed.
        wanted = {"status": None if status == ANY else status, "class": None if label == ANY else label}
        filters = {**wanted, "needs review": review_only}
        list_shown(actor, f"job {job_id} results", filters=filters, page=1, shown=len(shown), total=len(rows))
    st.caption(f"{len(shown)} of {len(rows)} files. Select a row to open its scan in the review queue.")
    page = paged_rows(shown, job_id)
    # A selection is a position in the rows shown: other rows (another page or filter) start without one, so a
    # position never picks a neighbour's scan.
    shown_rows = hashlib.sha256("\n".join(r.rel_path for r in page).encode()).hexdigest()[:16]
    selection = st.dataframe(
        results_frame(page, frameworks, threshold),
        hide_index=True,
        key=f"batch_table:{job_id}:{shown_rows}",
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "why": st.column_config.TextColumn("why", width="large"),
            "answer: confidence": st.column_config.NumberColumn(format="percent"),
            **{
                f"{framework_label(fw)}: confidence": st.column_config.NumberColumn(format="percent")
                for fw in frameworks
            },
        },
    )
    picked = [page[i] for i in selection.selection.rows if i < len(page)] if selection else []
    if picked and picked[0].scan_id is not None:
        st.page_link(
            pages().review,
            label=f"Open scan #{picked[0].scan_id} ({literal(picked[0].rel_path)}) in the review queue",
            query_params={"scan": str(picked[0].scan_id)},
            icon=":material/open_in_new:",
        )
    elif picked:
        st.caption(
            f"{literal(picked[0].rel_path)} has no stored scan: {literal(picked[0].error or 'it was not saved')}."
        )
    st.download_button(
        f"Download these {len(shown)} rows as CSV",
        # Runs when clicked, outside the page's run: the service checks this actor's session again then.
        data=lambda: records.export_batch(actor, job_id=job_id, rows=shown, frameworks=frameworks, threshold=threshold),
        file_name=f"batch-{job_id}.csv",
        mime="text/csv",
        key=f"batch_csv:{job_id}",
        on_click="ignore",
    )


def paged_rows(rows: list[BatchRow], job_id: int) -> list[BatchRow]:
    """The rows of the table's current page (thumbnails are drawn for those only)."""
    count = max(1, math.ceil(len(rows) / ROWS_PER_PAGE))
    key = f"batch_rows_page:{job_id}:{count}"
    number = st.session_state.get(key, 1) if count > 1 else 1
    if count > 1:
        st.pagination(count, key=key)
    start = (min(number, count) - 1) * ROWS_PER_PAGE
    return rows[start : start + ROWS_PER_PAGE]
