"""Plotly figures the pages draw."""

from collections.abc import Mapping

import plotly.graph_objects as go

from domain import class_label

HIGHLIGHT = "#d62728"
MUTED = "#7f9cb8"


def probability_chart(probs: Mapping[str, float], *, title: str | None = None, height: int = 220) -> go.Figure:
    """Horizontal bars of class probabilities, named in words, the most likely class highlighted."""
    values = [float(value) for value in probs.values()]
    labels = [class_label(name) for name in probs]
    best = max(range(len(values)), key=values.__getitem__) if values else -1
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=[HIGHLIGHT if i == best else MUTED for i in range(len(values))],
            text=[f"{v:.1%}" for v in values],
            textposition="auto",
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 10, "r": 10, "t": 30 if title else 10, "b": 10},
        xaxis={"range": [0, 1], "tickformat": ".0%"},
        yaxis={"autorange": "reversed"},
        showlegend=False,
    )
    return fig


def training_curves(epochs: list[Mapping[str, float]], *, height: int = 300) -> go.Figure:
    """Loss and accuracy per epoch (training vs validation) and the learning rate, side by side."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Accuracy", "Learning rate"))
    x = [row["epoch"] for row in epochs]
    for col, metric in ((1, "loss"), (2, "acc")):
        for split, colour in (("train", MUTED), ("val", HIGHLIGHT)):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[row[f"{split}_{metric}"] for row in epochs],
                    mode="lines+markers",
                    name="training" if split == "train" else "validation",
                    legendgroup=split,
                    showlegend=col == 1,
                    line={"color": colour},
                ),
                row=1,
                col=col,
            )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[row["lr"] for row in epochs],
            mode="lines+markers",
            name="learning rate",
            showlegend=False,
            line={"color": "#2ca02c"},
        ),
        row=1,
        col=3,
    )
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="e", row=1, col=3)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(x) <= 20 else None)
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25}
    )
    return fig


def overlaid_curves(curves: Mapping[str, list[Mapping[str, float]]], metric: str, *, title: str) -> go.Figure:
    """One line per run of an epoch metric (e.g. "val_acc"), for comparing runs."""
    fig = go.Figure()
    for label, epochs in curves.items():
        x, y = [row["epoch"] for row in epochs], [row[metric] for row in epochs]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label))
    fig.update_layout(
        title=title,
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="epoch",
        legend={"orientation": "h", "y": -0.25},
    )
    if metric.endswith("_acc"):
        # Accuracy lives in [0, 1]; autorange on a flat curve would show negative percentages.
        fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    return fig


def confusion_matrix_chart(matrix: list[list[int]], labels: list[str], *, title: str | None = None) -> go.Figure:
    """A confusion-matrix heatmap: rows are the true class, columns the predicted one, cells the counts."""
    names = [class_label(label) for label in labels]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=names,
            y=names,
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
            showscale=False,
        )
    )
    fig.update_layout(
        title=title,
        height=360,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"title": "predicted", "side": "bottom"},
        yaxis={"title": "true", "autorange": "reversed"},
    )
    return fig


def class_counts_chart(counts: Mapping[str, Mapping[str, int]], *, title: str | None = None) -> go.Figure:
    """Grouped bars: how many images each model put in each class ({model: {class: count}})."""
    fig = go.Figure(
        [
            go.Bar(
                x=[class_label(name) for name in per_class],
                y=list(per_class.values()),
                name=model,
                text=list(per_class.values()),
                textposition="auto",
                hovertemplate=f"{model}<br>%{{x}}: %{{y}}<extra></extra>",
            )
            for model, per_class in counts.items()
        ]
    )
    fig.update_layout(
        title=title,
        height=300,
        barmode="group",
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        yaxis={"title": "images"},
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
    return fig
