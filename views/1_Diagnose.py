"""Diagnose: upload scans, see each active model's answer and heatmap, save them to a patient's record."""

from dataclasses import dataclass

import streamlit as st

from db.session import session_scope
from domain import AuditAction, Framework
from models.data.imaging import DecodedImage, ImageError, make_overlay
from services.auth import Actor, audit
from services.diagnosis import (
    ModelResult,
    Review,
    averaged_result,
    model_result,
    pair_temperature,
    review,
    save_scan_with_predictions,
)
from services.ood import NOT_MRI, OodGate, OodVerdict, gate_for, header_verdicts
from services.predictors import ModelFileProblem
from settings import get_settings
from ui.auth import require
from ui.charts import probability_chart
from ui.image_cache import decoded_upload
from ui.nav import link_to_page
from ui.patients import patient_picker
from ui.predictors import ActiveModel, active_models, gradcam, ood_verdicts, predictor_for, probabilities_many
from ui.text import literal

SAVED_KEY = "diagnose_saved"  # {"<patient>:<sha256>": scan id} for this browser session
AUDITED_KEY = "diagnose_audited"  # sha256 of every image whose upload and prediction this session recorded


@dataclass
class Analysis:
    name: str
    decoded: DecodedImage
    results: list[ModelResult]  # none for an image the check flagged, until its answer is asked for
    review: Review
    ood: OodVerdict | None = None  # None where no check is fitted for the active CNN and the header says MR or nothing

    @property
    def refused(self) -> bool:
        """The check says it is not a brain MRI slice: its answer is hidden unless asked for, and never saved."""
        return self.ood is not None and self.ood.flagged


def anyway_key(decoded: DecodedImage) -> str:
    return f"diagnose_anyway:{decoded.sha256}"


def analyse_all(
    uploads: list[tuple[str, DecodedImage]], models: list[ActiveModel], threshold: float, gate: OodGate | None
) -> list[Analysis]:
    """The check first, for all images in one pass; then each model answers, one batch for all the images the
    check let through and those whose answer the person asked to see."""
    images = [(decoded.sha256, decoded.rgb) for _, decoded in uploads]
    # Without the check's statistics a DICOM file's header still says whether it is an MR image.
    verdicts = header_verdicts([decoded.modality for _, decoded in uploads])
    if gate is not None:
        checked = ood_verdicts(gate.artifact_path, gate.sha256, images)
        verdicts = [v.with_modality(decoded.modality) for v, (_, decoded) in zip(checked, uploads, strict=True)]
    answered = {
        i
        for i, (v, (_, decoded)) in enumerate(zip(verdicts, uploads, strict=True))
        if v is None or not v.flagged or st.session_state.get(anyway_key(decoded))
    }
    order = sorted(answered)
    probs = {
        m.framework: dict(
            zip(order, probabilities_many(m.framework, m.artifact_path, m.sha256, [images[i] for i in order]))
        )
        for m in models
    }
    analyses = []
    for position, ((name, decoded), verdict) in enumerate(zip(uploads, verdicts, strict=True)):
        if verdict is not None and position not in answered:  # flagged, its answer not asked for
            analyses.append(Analysis(name, decoded, [], Review(True, [verdict.reason]), verdict))
            continue
        results = [
            model_result(
                framework=m.framework, model_version_id=m.version_id, probabilities=probs[m.framework][position]
            )
            for m in models
        ]
        analyses.append(Analysis(name, decoded, results, review(results, threshold), verdict))
    return analyses


def loaded_models(models: list[ActiveModel]) -> list[ActiveModel]:
    """The active models whose files load and are the files registered; a refused one is reported and left out."""
    usable = []
    for m in models:
        try:
            predictor_for(m)
        except ModelFileProblem as exc:
            st.error(
                f"The active {m.label} model ({literal(m.name)}) is not used: {literal(exc)}. An admin can restore "
                "the file or make another version active on the Models page."
            )
            continue
        except (OSError, ValueError, RuntimeError) as exc:
            st.error(f"The active {m.label} model ({literal(m.name)}) could not be loaded: {literal(exc)}")
            continue
        usable.append(m)
    return usable


def no_model_message() -> None:
    st.error(
        "No model is active yet, so scans cannot be analysed. Train a model on the Train page, "
        "or activate a trained one on the Models page."
    )
    link_to_page("views/4_Train.py", label="Train a model", icon="🏋️")
    link_to_page("views/6_Models.py", label="Choose the active models", icon="🗂️")


def audit_predictions(actor: Actor, analyses: list[Analysis]) -> None:
    """One audit entry per image predicted in this session (not one per redraw), and one when a flagged image's
    answer is shown; saving it is another."""
    audited = st.session_state.setdefault(AUDITED_KEY, set())
    for a in analyses:
        key = a.decoded.sha256 if a.results else f"{a.decoded.sha256}:refused"
        if key in audited:
            continue
        labels = ", ".join(f"{r['framework']}: {r['label']} {r['confidence']:.0%}" for r in a.results)
        if a.ood is not None and a.ood.flagged:
            shown = f"{labels}, shown although " if a.results else "no tumor class shown: "
            labels = f"{shown}{a.ood.reason}"
        audit(actor, AuditAction.PREDICTION, target=f"image {a.decoded.sha256[:16]}", detail=f"{a.name}: {labels}")
        audited.add(key)


def save(actor: Actor, analyses: list[Analysis], mrn: str, threshold: float) -> None:
    """Save every analysed scan to the patient's record; a scan already there is not saved twice."""
    saved = st.session_state.setdefault(SAVED_KEY, {})
    new_scans = new_predictions = 0
    with session_scope() as session:
        for a in analyses:
            outcome = save_scan_with_predictions(
                session=session,
                decoded=a.decoded,
                patient_mrn=mrn,
                source="upload",
                results=a.results,
                threshold=threshold,
                original_name=a.name,
            )
            saved[f"{mrn}:{a.decoded.sha256}"] = outcome.scan.id
            audit(
                actor,
                AuditAction.UPLOAD,
                target=f"scan {outcome.scan.id}",
                patient_mrn=mrn,
                detail=f"{a.name} saved to the record with {len(a.results)} prediction(s)",
                session=session,
            )
            new_scans += outcome.scan_created
            new_predictions += outcome.predictions_created
    already = len(analyses) - new_scans
    st.success(
        f"Saved to patient {literal(mrn)}'s record: {new_scans} new scan(s), {new_predictions} new prediction(s)."
        + (f" {already} scan(s) were already in the record and are kept once." if already else "")
    )


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


def show_analysis(
    a: Analysis, models: list[ActiveModel], threshold: float, opacity: float, mrn: str | None, position: int
) -> None:
    st.subheader(literal(a.name))
    st.caption(metadata_line(a.decoded))
    scan_id = st.session_state.get(SAVED_KEY, {}).get(f"{mrn}:{a.decoded.sha256}")
    if scan_id is not None:
        st.caption(f"Saved to patient {literal(mrn)}'s record (scan #{scan_id}).")
    if a.ood is not None and a.ood.flagged:
        st.error(
            f"**{NOT_MRI}.** The tumor models were trained on brain MRI slices only; this image does not look like "
            f"one: {a.ood.explanation}.",
            icon="🚫",
        )
        st.checkbox("Show the models' answer anyway", key=anyway_key(a.decoded))
        if not a.results:
            st.image(a.decoded.rgb, caption="Original", width=320)
            return
        st.warning(
            "**Shown anyway, for an image that is not a brain MRI slice**: the classes below are what the models "
            "make of it, not a finding. It is not saved to the record.",
            icon="⚠️",
        )

    labels = {r["label"] for r in a.results}
    if len(a.results) > 1 and len(labels) == 1:
        st.markdown(f"The models **agree**: {a.results[0]['label']}.")
    elif len(a.results) > 1:
        answers = ", ".join(f"{m.label} says {r['label']}" for m, r in zip(models, a.results))
        frameworks = {m.framework: m.sha256 for m in models}
        temperature = pair_temperature(frameworks.get("torch", ""), frameworks.get("keras", ""))
        label, mean = averaged_result(a.results, temperature=temperature)
        st.markdown(
            f"The models **disagree**: {answers}. Averaged, their probabilities favour **{label}** "
            f"({mean:.0%}); the clinician decides."
        )
    if a.review.flagged:
        st.warning(f"**Needs review**: {'; '.join(a.review.reasons)}.", icon="⚠️")
    elif len(a.results) > 1:
        st.success(f"No review flag: the models agree and each is at least {threshold:.0%} confident.")
    else:
        st.info(f"Only the {models[0].label} is active, so agreement between models cannot be checked.")

    for col, m, r in zip(st.columns(len(models)), models, a.results):
        with col:
            st.metric(m.label, r["label"], help=f"Model version: {m.name}")
            st.caption(f"Confidence {r['confidence']:.1%}")
            st.plotly_chart(
                probability_chart(r["probabilities"]),
                key=f"probs:{position}:{m.framework}",
                config={"displayModeBar": False},
            )

    columns = st.columns(len(models) + 1)
    columns[0].image(a.decoded.rgb, caption="Original", width="stretch")
    for col, m in zip(columns[1:], models):
        cam = gradcam(m.framework, m.artifact_path, m.sha256, a.decoded.sha256, a.decoded.rgb)
        col.image(
            make_overlay(a.decoded.rgb, cam, opacity),
            caption=f"{Framework(m.framework).heatmap} heatmap: {m.label}",
            width="stretch",
        )


def main() -> None:
    actor = require()
    st.title("Diagnose a scan")
    settings = get_settings()
    threshold = settings.confidence_threshold

    models = active_models()
    if not models:
        no_model_message()
        return
    models = loaded_models(models)
    if not models:
        return
    gate, gate_note = gate_for(models)

    files = st.file_uploader(
        "MRI slices: JPEG, PNG or DICOM",
        type=["jpg", "jpeg", "png", "dcm"],
        accept_multiple_files=True,
        key="diagnose_files",
        help=f"Up to {settings.max_files_per_upload} files at once, {settings.max_upload_mb} MB each.",
    )
    if not files:
        st.caption("Models in use: " + ", ".join(f"{m.label}: {m.name}" for m in models) + ". " + gate_note)
        return
    if len(files) > settings.max_files_per_upload:
        st.error(
            f"{len(files)} files were chosen; at most {settings.max_files_per_upload} are analysed at once. "
            "Remove some, or predict a whole folder or zip on the Batch page."
        )
        return

    decoded: list[tuple[str, DecodedImage]] = []
    for f in files:
        try:
            image = decoded_upload(
                f.getvalue(), f.name, max_bytes=settings.max_upload_mb * 2**20, max_pixels=settings.max_image_pixels
            )
        except ImageError as exc:
            st.error(f"Not analysed: {literal(exc)}")
            continue
        decoded.append((f.name, image))
    if not decoded:
        return
    if gate is None:
        st.info(gate_note)
    analyses = analyse_all(decoded, models, threshold, gate)
    audit_predictions(actor, analyses)
    savable = [a for a in analyses if not a.refused]

    header_ids = {a.decoded.patient_mrn for a in analyses if a.decoded.patient_mrn}
    if len(header_ids) > 1:
        named = ", ".join(sorted(header_ids))
        st.warning(
            f"These DICOM files name different patients ({literal(named)}); all are saved to the patient chosen below."
        )
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    with left:
        mrn = patient_picker(key="diagnose_patient", suggested=min(header_ids) if header_ids else None)
    if mrn and header_ids - {mrn}:
        named = ", ".join(sorted(header_ids - {mrn}))
        st.warning(f"The DICOM header names patient {literal(named)}, not {literal(mrn)}.")
    saved = st.session_state.get(SAVED_KEY, {})
    all_saved = mrn is not None and all(f"{mrn}:{a.decoded.sha256}" in saved for a in savable)
    with right:
        clicked = st.button(
            "Saved to the record" if savable and all_saved else f"Save {len(savable)} scan(s) to the record",
            type="primary",
            disabled=mrn is None or all_saved or not savable,
            key="diagnose_save",
        )
    if len(savable) < len(analyses):
        st.caption(
            f"{len(analyses) - len(savable)} image(s) that are not brain MRI slices are not saved to the record."
        )
    if clicked and mrn:
        save(actor, savable, mrn, threshold)
    if mrn and any(f"{mrn}:{a.decoded.sha256}" in st.session_state.get(SAVED_KEY, {}) for a in analyses):
        link_to_page(
            "views/3_History.py",
            label=f"Open patient {literal(mrn)}'s history",
            query_params={"patient": mrn},
            icon="📋",
        )

    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05, key="diagnose_opacity")
    for position, a in enumerate(analyses):
        st.divider()
        show_analysis(a, models, threshold, opacity, mrn, position)


main()
