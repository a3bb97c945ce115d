"""The Train page's dataset health report: class balance, sizes and modes, unreadable files, duplicates, leakage."""

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from domain import class_label
from models.data.health import MIN_CLASS_SHARE, HealthReport, mode_label
from ui.charts import HIGHLIGHT, MUTED

GROUPS_SHOWN = 4
THUMBNAILS_PER_GROUP = 6
THUMBNAIL_WIDTH = 96


def class_chart(report: HealthReport, *, height: int = 260) -> go.Figure:
    """Images per class; a class below the minimum share in the highlight colour, the minimum as a line."""
    names = list(report.per_class)
    counts = [report.per_class[name] for name in names]
    total = report.images or 1
    ratio = report.imbalance_ratio
    title = f"Images per class · imbalance {ratio:.2f}× (largest over smallest)" if ratio else "Images per class"
    fig = go.Figure(
        go.Bar(
            x=[class_label(name) for name in names],
            y=counts,
            marker_color=[HIGHLIGHT if n / total < MIN_CLASS_SHARE else MUTED for n in counts],
            text=[f"{n:,} ({n / total:.1%})" for n in counts],
            textposition="auto",
            hovertemplate="%{x}: %{y:,} images<extra></extra>",
        )
    )
    fig.add_hline(
        y=MIN_CLASS_SHARE * total,
        line_dash="dot",
        line_color=HIGHLIGHT,
        annotation_text=f"{MIN_CLASS_SHARE:.0%} of the folder",
        annotation_position="top left",
    )
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False)
    return fig


def leakage_chart(test: dict, *, height: int = 240) -> go.Figure:
    """Per class, the share of test images that have an exact or near duplicate in training."""
    names = [name for name, c in test["per_class"].items() if c["images"]]
    shares = [test["per_class"][n]["leaked"] / test["per_class"][n]["images"] for n in names]
    fig = go.Figure(
        go.Bar(
            x=[class_label(name) for name in names],
            y=shares,
            marker_color=[HIGHLIGHT if s else MUTED for s in shares],
            text=[f"{test['per_class'][n]['leaked']:,} of {test['per_class'][n]['images']:,}" for n in names],
            textposition="auto",
            hovertemplate="%{x}: %{y:.1%} of its test images<extra></extra>",
        )
    )
    fig.update_layout(
        title="Test images with a duplicate in training, per class",
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis={"range": [0, 1], "tickformat": ".0%"},
        showlegend=False,
    )
    return fig


def _formats_table(report: HealthReport) -> pd.DataFrame:
    total = report.images or 1
    return pd.DataFrame(
        [
            {
                "size": f"{f['width']}×{f['height']}",
                "mode": mode_label(f["mode"]),
                "images": f["images"],
                "share": f"{f['images'] / total:.1%}",
            }
            for f in report.formats
        ]
    )


def _group_title(group: dict) -> str:
    classes = sorted({image["class"] for image in group["images"]})
    kind = "identical files" if group["exact"] else "exact or near duplicates"
    mixed = " · **classes differ**" if group["conflicting_labels"] else ""
    return f"{len(group['images'])} {kind} · {', '.join(classes)}{mixed}"


def _duplicates(report: HealthReport) -> None:
    d = report.duplicates
    st.markdown(
        f"**Duplicates:** {d['duplicate_groups']:,} groups hold {d['images_in_duplicate_groups']:,} images; "
        f"{d['exact_duplicates']:,} files are extra copies of another; "
        f"{d['groups_with_conflicting_labels']:,} groups mix classes. The validation split keeps each group on one side."
    )
    root = Path(report.root)
    for group in report.groups[:GROUPS_SHOWN]:
        st.markdown(_group_title(group))
        shown = group["images"][:THUMBNAILS_PER_GROUP]
        st.image(
            [str(root / image["path"]) for image in shown],
            caption=[image["path"] for image in shown],
            width=THUMBNAIL_WIDTH,
        )
    if len(report.groups) > GROUPS_SHOWN:
        with st.expander(f"All {len(report.groups):,} duplicate groups"):
            rows = [
                {
                    "group": n,
                    "kind": "identical" if g["exact"] else "near",
                    "class": image["class"],
                    "path": image["path"],
                }
                for n, g in enumerate(report.groups, start=1)
                for image in g["images"]
            ]
            st.dataframe(pd.DataFrame(rows), hide_index=True)


def _leakage(test: dict) -> None:
    leaked = test["leaked"]
    st.markdown(
        f"**Test folder** `{test['root']}`: {len(leaked):,} of {test['images']:,} images have an exact or near "
        "duplicate in training."
    )
    if test["images"]:
        st.plotly_chart(leakage_chart(test), key="health_leakage_chart")
    if leaked:
        st.dataframe(
            pd.DataFrame(leaked).rename(columns={"path": "test image", "match": "its duplicate in training"}),
            hide_index=True,
        )
    if test["unreadable"]:
        st.markdown("Test files that will not be scored:")
        st.dataframe(pd.DataFrame(test["unreadable"]), hide_index=True)


def render_report(report: HealthReport) -> None:
    """The whole report: warnings and notes first, then the figures behind them."""
    for warning in report.warnings:
        st.warning(warning)
    for note in report.notes:
        st.info(note)
    cells = st.columns(4)
    cells[0].metric("Readable images", f"{report.images:,}")
    ratio = report.imbalance_ratio
    cells[1].metric("Imbalance (largest / smallest)", f"{ratio:.2f}×" if ratio else "∞")
    cells[2].metric("Duplicate groups", f"{report.duplicates['duplicate_groups']:,}")
    cells[3].metric("Not usable", f"{len(report.unreadable):,}")
    st.plotly_chart(class_chart(report), key="health_class_chart")
    st.markdown("**Sizes and pixel modes**")
    st.dataframe(_formats_table(report), hide_index=True)
    if report.unreadable:
        st.markdown("**Files training will not use**")
        st.dataframe(pd.DataFrame(report.unreadable), hide_index=True)
    _duplicates(report)
    if report.test is not None:
        _leakage(report.test)
