"""Plotly figures the pages draw."""

from collections.abc import Mapping

import plotly.graph_objects as go

HIGHLIGHT = "#d62728"
MUTED = "#7f9cb8"


def probability_chart(probs: Mapping[str, float], *, title: str | None = None, height: int = 220) -> go.Figure:
    """Horizontal bars of class probabilities, the most likely class highlighted."""
    labels = list(probs)
    values = [float(probs[label]) for label in labels]
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
