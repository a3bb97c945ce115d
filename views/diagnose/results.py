"""How the Diagnose page shows its analyses: a summary of many, and each scan's answers, probabilities and maps."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from domain import Framework, class_label
from models.data.imaging import DecodedImage, jet_colormap, make_overlay
from services.ood import NOT_MRI
from services.uploads import ActiveModel, Analysis
from ui.charts import probability_chart
from ui.predictors import heatmap
from ui.text import literal

# What each model's map shows, in one line under it.
MAP_NOTES = {
    Framework.TORCH: "HiResCAM: where the CNN found the evidence for its answer; the reddest parts raised it most.",
    Framework.KERAS: "Occlusion: the regions whose hiding lowers MobileNetV2's answer most, on an 8 x 8 grid.",
}


def anyway_key(decoded: DecodedImage) -> str:
    """The session key of "Show the models' answer anyway" for an image the check refused."""
    return f"diagnose_anyway:{decoded.sha256}"


@dataclass(frozen=True)
class MapView:
    """The heatmap controls: the models whose maps are drawn, their opacity, and the layout."""

    shown: tuple[str, ...]  # frameworks
    opacity: float
    compare: bool  # the maps side by side at full width, without the original


def colour_scale() -> np.ndarray:
    """The overlay's colours from no weight to the most, as a strip."""
    return np.repeat(jet_colormap(np.linspace(0.0, 1.0, 256))[None], 14, axis=0)


def map_controls(models: list[ActiveModel]) -> MapView:
    """Which maps to draw and how: one toggle per model, opacity, side by side; and the colour scale."""
    with st.container(border=True):
        columns = st.columns([1] * len(models) + [2, 2])
        shown = tuple(
            m.framework
            for m, column in zip(models, columns, strict=False)
            if column.toggle(
                f"{m.label} heatmap", value=True, key=f"diagnose_map_{m.framework}", help=MAP_NOTES[m.framework]
            )
        )
        opacity = columns[-2].slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="diagnose_opacity")
        compare = columns[-1].toggle(
            "Maps side by side, full width",
            key="diagnose_compare",
            help="Each model's map next to the other's at the page's full width, without the original beside them.",
        )
        st.image(colour_scale(), width=256)
        st.caption(
            "Colour scale of every heatmap: blue, what weighed least in the model's answer, through cyan and yellow "
            "to red, what weighed most. Each map is scaled to its own strongest point."
        )
    return MapView(shown, opacity, compare)


def answer_text(a: Analysis, models: list[ActiveModel]) -> str:
    """The answer in a few words, for the summary table: the models' one answer, and each model's where they
    disagree."""
    if not a.results:
        return "Not a brain MRI slice: no tumor class"
    labels = [class_label(r["label"]) for r in a.results]
    combined = a.answer if len(a.results) > 1 else None
    answer = f"{class_label(combined.label)} ({combined.confidence:.1%})" if combined else labels[0]
    if len(set(labels)) > 1:
        answer += " — " + "; ".join(f"{m.label}: {label}" for m, label in zip(models, labels, strict=True))
    return f"{answer} (not a brain MRI slice, shown anyway)" if a.refused else answer


def flag_text(a: Analysis) -> str:
    if a.refused:
        return "Not a brain MRI slice"
    return f"Needs review: {'; '.join(a.review.reasons)}" if a.review.flagged else ""


def summary_table(analyses: list[Analysis], models: list[ActiveModel]) -> None:
    """One row per file: its answer and why it is flagged, before each scan in detail."""
    rows = [{"file": a.name, "answer": answer_text(a, models), "flag": flag_text(a)} for a in analyses]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="diagnose_summary")


def metadata_line(decoded: DecodedImage) -> str:
    parts = [decoded.image_format, f"{decoded.width} × {decoded.height} px"]
    if decoded.image_format == "DICOM":
        parts += [
            f"modality {literal(decoded.modality or 'not given')}",
            f"study date {literal(decoded.study_date or 'not given')}",
            f"series “{literal(decoded.series_description)}”"
            if decoded.series_description
            else "no series description",
        ]
    if decoded.note:
        parts.append(decoded.note)
    return " · ".join(parts)


def _refusal(a: Analysis, position: int) -> bool:
    """The not-a-brain-MRI notice in plain words, its figures behind a toggle; whether the answer is shown."""
    header = f" ({a.ood.header})" if a.ood and a.ood.header else ""
    st.error(
        f"**{NOT_MRI}.** The tumor models were trained on brain MRI slices only, and this image does not look like "
        f"one{header}, so no tumor class is given.",
        icon="🚫",
    )
    if st.toggle("Details", key=f"diagnose_details:{position}:{a.decoded.sha256}") and a.ood is not None:
        st.caption(f"Why: {a.ood.explanation}.")
    st.checkbox("Show the models' answer anyway", key=anyway_key(a.decoded))
    if not a.results:
        st.image(a.decoded.rgb, caption="Original", width=320)
        return False
    st.warning(
        "**Shown anyway, for an image that is not a brain MRI slice**: the classes below are what the models "
        "make of it, not a finding. It is not saved to the record.",
        icon="⚠️",
    )
    return True


def _verdict(a: Analysis, models: list[ActiveModel], threshold: float) -> None:
    """The models' one answer with its confidence, whether they agree, and the review flag."""
    labels = {r["label"] for r in a.results}
    combined = a.answer
    if len(a.results) > 1 and combined is not None:
        st.markdown(f"**Answer: {class_label(combined.label)}**, {combined.confidence:.1%} confident — {combined.how}.")
    if len(a.results) > 1 and len(labels) == 1:
        st.markdown(f"The models **agree**: {class_label(a.results[0]['label'])}.")
    elif len(a.results) > 1:
        answers = ", ".join(f"{m.label} says {class_label(r['label'])}" for m, r in zip(models, a.results))
        st.markdown(f"The models **disagree**: {answers}. Their own answers are below; the clinician decides.")
    if a.review.flagged:
        st.warning(f"**Needs review**: {'; '.join(a.review.reasons)}.", icon="⚠️")
    elif len(a.results) > 1 and a.rule is not None:
        st.success(f"No review flag: it is raised when {a.rule.flag_rule()}.")
    elif len(a.results) > 1:
        st.success(f"No review flag: the models agree and each is at least {threshold:.0%} confident.")
    else:
        st.info(f"Only the {models[0].label} is active, so agreement between models cannot be checked.")


def _maps(a: Analysis, models: list[ActiveModel], view: MapView) -> None:
    shown = [(m, r) for m, r in zip(models, a.results, strict=True) if m.framework in view.shown]
    if view.compare and shown:
        places = st.columns(len(shown))
    else:
        columns = st.columns(len(shown) + 1)
        columns[0].image(a.decoded.rgb, caption="Original", width="stretch")
        places = columns[1:]
    for place, (m, r) in zip(places, shown, strict=True):
        cam = heatmap(m.framework, m.artifact_path, m.sha256, a.decoded.sha256, a.decoded.rgb)
        place.image(
            make_overlay(a.decoded.rgb, cam, view.opacity),
            caption=f"{Framework(m.framework).heatmap} heatmap: {m.label}, for {class_label(r['label'])}",
            width="stretch",
        )
        place.caption(MAP_NOTES[m.framework])


def show_analysis(
    a: Analysis, models: list[ActiveModel], *, threshold: float, view: MapView, saved_as: str | None, position: int
) -> None:
    """One scan: where it came from, the check's word, each model's answer and probabilities, and the maps."""
    st.caption(metadata_line(a.decoded))
    if saved_as:
        st.caption(saved_as)
    if a.refused and not _refusal(a, position):
        return
    _verdict(a, models, threshold)
    for column, m, r in zip(st.columns(len(models)), models, a.results, strict=True):
        with column:
            st.metric(m.label, class_label(r["label"]), help=f"Model version: {m.name}")
            st.caption(f"Confidence {r['confidence']:.1%}")
            st.plotly_chart(
                probability_chart(r["probabilities"]),
                key=f"probs:{position}:{m.framework}",
                config={"displayModeBar": False},
            )
    _maps(a, models, view)
