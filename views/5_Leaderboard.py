"""Leaderboard: every finished training run against the report's published figures; compare runs in detail."""

import pandas as pd
import streamlit as st

from db.leaderboard import RunDetail, dataset_options, leaderboard_rows, run_details
from db.session import read_scope
from domain import FRAMEWORKS, Role, class_label, framework_label
from ui.auth import require
from ui.charts import confusion_matrix_chart, overlaid_curves
from ui.format import duration_text

ALL = "All"
PERCENT = st.column_config.NumberColumn(format="percent")
SPLIT_NAMES = {
    "val": "validation",
    "test": "test",
    "test_without_training_duplicates": "test without training duplicates",
}

require(Role.ADMIN)
st.title("Leaderboard")
st.caption(
    "Accuracy, precision, recall and F1 (macro) are measured on each run's validation split, carved from its "
    "dataset after removing duplicates; the test columns are filled when a run was given a test folder. "
    "The rows marked reference are the figures the report published, on its own test split: not runs of this system."
)

with read_scope() as session:
    datasets = dataset_options(session=session)
filters = st.columns([1, 2, 1])
framework = filters[0].selectbox("Model", [ALL, *FRAMEWORKS], format_func=framework_label, key="leaderboard_framework")
dataset_names = {fp: f"{fp[:12]} · {path} ({count} run{'s' if count != 1 else ''})" for fp, path, count in datasets}
fingerprint = filters[1].selectbox(
    "Dataset (fingerprint of its labelled content)",
    [ALL, *dataset_names],
    format_func=lambda fp: dataset_names.get(fp, fp),
    key="leaderboard_dataset",
)
with_reference = filters[2].checkbox("Show the report's rows", value=True, key="leaderboard_reference")

with read_scope() as session:
    rows = leaderboard_rows(
        session=session,
        fingerprint=None if fingerprint == ALL else fingerprint,
        framework=None if framework == ALL else framework,
        include_reference=with_reference,
    )

table = pd.DataFrame(
    [
        {
            "run": row["source"],
            "reference": row["reference"],
            "model": framework_label(row["framework"]),
            "preset": row["preset"],
            "dataset": row["dataset_path"],
            "fingerprint": (row["fingerprint"] or "")[:12],
            "accuracy": row["accuracy"],
            "precision": row["precision"],
            "recall": row["recall"],
            "F1": row["f1"],
            "test accuracy": row["test_accuracy"],
            "test F1": row["test_f1"],
            "ECE": row["ece_after"],
            "ECE uncalibrated": row["ece_before"],
            "NLL": row["nll_after"],
            "temperature": row["temperature"],
            "inference ms": row["inference_ms"],
            "memory MB": row["memory_mb"],
            "model MB": row["model_size_mb"],
            "epochs": row["epochs"],
            "duration": duration_text(row["duration_s"]) if row["duration_s"] is not None else None,
            "pretrained": row["pretrained"],
            "finished (UTC)": row["finished_at"],
        }
        for row in rows
    ]
)
if not any(not row["reference"] for row in rows):
    st.info("No finished run matches yet: start one on the Train page.")
if rows:
    st.dataframe(
        table,
        hide_index=True,
        key="leaderboard_table",
        column_config={
            **{name: PERCENT for name in ("accuracy", "precision", "recall", "F1", "test accuracy", "test F1")},
            "ECE": st.column_config.NumberColumn(
                format="%.3f", help="expected calibration error over 15 bins, after temperature scaling (cross-fitted)"
            ),
            "ECE uncalibrated": st.column_config.NumberColumn(format="%.3f"),
            "NLL": st.column_config.NumberColumn(
                format="%.3f", help="negative log-likelihood, after temperature scaling"
            ),
            "temperature": st.column_config.NumberColumn(format="%.2f"),
            "inference ms": st.column_config.NumberColumn(format="%.1f"),
            "memory MB": st.column_config.NumberColumn(format="%.0f"),
            "model MB": st.column_config.NumberColumn(format="%.1f"),
            "reference": st.column_config.CheckboxColumn(help="the report's published figures"),
        },
    )

st.header("Compare runs")
runs = {row["run_id"]: row["source"] for row in rows if not row["reference"]}
asked = st.query_params.get("run")
default = [int(asked)] if asked and asked.isdigit() and int(asked) in runs else list(runs)[:2]
chosen = st.multiselect("Runs", list(runs), default=default, format_func=runs.get, key="leaderboard_compare")
if not chosen:
    st.caption("Pick runs above to see their curves, figures and confusion matrices side by side.")
    st.stop()
with read_scope() as session:
    details: list[RunDetail] = run_details(session=session, run_ids=chosen)

curves = {d.label: d.epochs for d in details}
left, right = st.columns(2)
left.plotly_chart(overlaid_curves(curves, "val_acc", title="Validation accuracy"), key="compare_val_acc")
right.plotly_chart(overlaid_curves(curves, "val_loss", title="Validation loss"), key="compare_val_loss")

figures = {
    "accuracy": ("val", "accuracy"),
    "precision": ("val", "precision"),
    "recall": ("val", "recall"),
    "F1": ("val", "f1"),
    "validation loss": ("val", "loss"),
    "test accuracy": ("test", "accuracy"),
    "test F1": ("test", "f1"),
    "inference ms": ("val", "inference_ms"),
    "model MB": ("val", "model_size_mb"),
}
side_by_side = pd.DataFrame(
    {
        d.label: {name: (d.metrics.get(split) or {}).get(key) for name, (split, key) in figures.items()}
        | {"peak memory MB": d.metrics.get("peak_memory_mb"), "best epoch": d.metrics.get("best_epoch")}
        for d in details
    }
)
st.dataframe(side_by_side, key="compare_figures", height=35 * (len(side_by_side) + 1) + 3)

for tab, detail in zip(st.tabs([d.label for d in details]), details, strict=True):
    with tab:
        splits = [split for split in SPLIT_NAMES if detail.metrics.get(split)]
        if not splits:
            st.caption("This run has no final figures.")
            continue
        split = st.radio(
            "Scored on", splits, format_func=SPLIT_NAMES.get, horizontal=True, key=f"compare_split_{detail.run_id}"
        )
        report = detail.metrics[split]
        matrix_col, table_col = st.columns([3, 2])
        title = f"{detail.label}: {SPLIT_NAMES[split]}"
        matrix_col.plotly_chart(
            confusion_matrix_chart(report["confusion_matrix"], report["labels"], title=title),
            key=f"compare_matrix_{detail.run_id}_{split}",
        )
        per_class = pd.DataFrame(report["per_class"]).T.rename(index=class_label).rename_axis("class").reset_index()
        table_col.dataframe(
            per_class,
            hide_index=True,
            key=f"compare_classes_{detail.run_id}_{split}",
            column_config={name: PERCENT for name in ("precision", "recall", "f1")},
        )
