"""Diagnose: upload scans, see each active model's answer and heatmap, save them to a patient's record.

Results not saved yet are kept on the server for their user (services/unsaved.py), so a reload shows them again.
"""

from typing import Any

import streamlit as st

from models.data.imaging import ImageError
from services import unsaved
from services.auth import Actor
from services.ood import gate_for
from services.predictors import ModelFileProblem
from services.uploads import ActiveModel, Analysis, Upload, active_models, analyse, audit_predictions, save_analyses
from settings import Settings, get_settings
from ui import errors
from ui.auth import require, signed_in
from ui.image_cache import decoded_upload
from ui.nav import pages
from ui.patients import patient_picker
from ui.predictors import CachedAnswers, predictor_for
from ui.text import literal
from views.diagnose.results import answer_text, anyway_key, map_controls, show_analysis, summary_table

SAVED_KEY = "diagnose_saved"  # {(patient id, image sha256): scan id} for this browser session
AUDITED_KEY = "diagnose_audited"  # Analysis.audit_key of every answer (or refusal) this session recorded
HAD_FILES_KEY = "diagnose_had_files"  # the uploader held files in this session: emptying it discards them
RESTORED_KEY = "diagnose_restored"  # the unsaved results restored in this session (None: none, or discarded)
KEPT_KEY = "diagnose_kept"  # what was last kept on the server, so that a redraw does not write it again


def loaded_models(models: list[ActiveModel], actor: Actor) -> list[ActiveModel]:
    """The active models whose files load and are the files registered; a refused one is reported and left out
    (with the file's path for an admin, who can act on it)."""
    usable = []
    for m in models:
        try:
            predictor_for(m)
        except (ModelFileProblem, OSError, ValueError, RuntimeError) as exc:
            problem = "is not used" if isinstance(exc, ModelFileProblem) else "could not be loaded"
            if actor.is_admin:
                st.error(
                    f"The active {m.label} model ({literal(m.name)}) {problem}: {literal(exc)}. Restore the file or "
                    "make another version active on the Models page."
                )
            else:
                st.error(f"The {m.label} model {problem}: its file is not the one registered. Ask an admin to fix it.")
            continue
        usable.append(m)
    return usable


def no_model_message(actor: Actor) -> None:
    if not actor.is_admin:
        st.error("No model is active yet, so scans cannot be analysed. Ask an admin to make a model active.")
        return
    st.error(
        "No model is active yet, so scans cannot be analysed. Train a model on the Train page, "
        "or activate a trained one on the Models page."
    )
    st.page_link(pages().train, label="Train a model", icon="🏋️")
    st.page_link(pages().models, label="Choose the active models", icon="🗂️")


def decoded_files(files: list[Any], settings: Settings) -> list[Upload]:
    """The uploaded files decoded; each one that cannot be is named with the reason."""
    uploads = []
    for f in files:
        try:
            image = decoded_upload(
                f.getvalue(), f.name, max_bytes=settings.max_upload_mb * 2**20, max_pixels=settings.max_image_pixels
            )
        except ImageError as exc:
            st.error(f"Not analysed: {literal(exc)}")
            continue
        uploads.append(Upload(f.name, image))
    return uploads


def _discard() -> None:
    unsaved.discard(signed_in())
    st.session_state[RESTORED_KEY] = None
    st.session_state.pop(KEPT_KEY, None)


def _kept_as(uploads: list[Upload], anyway: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """What keep_unsaved compares to know whether the server's copy is current."""
    return [(u.name, u.decoded.sha256) for u in uploads], sorted(anyway)


def restored_uploads(actor: Actor) -> list[Upload]:
    """The results this user left unsaved (a reload, a lost connection), shown again until saved or discarded."""
    if RESTORED_KEY not in st.session_state:
        kept = unsaved.restore(actor)
        st.session_state[RESTORED_KEY] = kept
        if kept is not None:
            for upload in kept.uploads:
                if upload.decoded.sha256 in kept.shown_anyway:
                    st.session_state.setdefault(anyway_key(upload.decoded), True)
            # Shown as kept: not written again (which would also put off its expiry) until something changes.
            st.session_state[KEPT_KEY] = _kept_as(kept.uploads, list(kept.shown_anyway))
    kept = st.session_state[RESTORED_KEY]
    if kept is None:
        return []
    st.info(
        f"{len(kept.uploads)} result(s) from {kept.kept_at:%Y-%m-%d %H:%M} UTC were not saved to a record: they are "
        "shown again below. Save them, discard them, or upload other files to start afresh."
    )
    if kept.unreadable:
        st.warning(f"{kept.unreadable} file(s) kept with them could not be read again and are left out.")
    st.button("Discard these results", key="diagnose_discard", on_click=_discard)
    return kept.uploads


def current_uploads(actor: Actor, settings: Settings) -> list[Upload]:
    """The uploader's files; when it has none, what this user left unsaved (emptying it discards that)."""
    files = st.file_uploader(
        f"MRI slices: JPEG, PNG or DICOM, up to {settings.max_upload_mb} MB each and "
        f"{settings.max_files_per_upload} at once",
        type=["jpg", "jpeg", "png", "dcm"],
        accept_multiple_files=True,
        max_upload_size=settings.max_upload_mb,
        key="diagnose_files",
        help="More files, a folder or a zip: predict them as a background job on the Batch page.",
    )
    if files:
        st.session_state[HAD_FILES_KEY] = True
        st.session_state[RESTORED_KEY] = None
        if len(files) > settings.max_files_per_upload:
            st.error(
                f"{len(files)} files were chosen; at most {settings.max_files_per_upload} are analysed at once. "
                "Remove some, or predict a whole folder or zip on the Batch page."
            )
            return []
        return decoded_files(files, settings)
    if st.session_state.pop(HAD_FILES_KEY, False):  # the person removed every file
        _discard()
        return []
    return restored_uploads(actor)


def keep_unsaved(actor: Actor, analyses: list[Analysis]) -> None:
    """Keep on the server what this page shows while a scan that could be saved is not in a record yet (images
    the check refused come back beside it, never alone); written only when that changes."""
    saved = {sha for _, sha in st.session_state.get(SAVED_KEY, {})}
    pending = [Upload(a.name, a.decoded) for a in analyses if a.decoded.sha256 not in saved]
    if all(a.refused for a in analyses if a.decoded.sha256 not in saved):
        pending = []
    anyway = [u.decoded.sha256 for u in pending if st.session_state.get(anyway_key(u.decoded))]
    signature = _kept_as(pending, anyway)
    if st.session_state.get(KEPT_KEY) != signature:
        unsaved.keep(actor, pending, shown_anyway=anyway)
        st.session_state[KEPT_KEY] = signature


def save_panel(actor: Actor, analyses: list[Analysis], threshold: float) -> str | None:
    """The patient and the save button; saves when clicked. Returns the chosen patient id."""
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
    saved = st.session_state.setdefault(SAVED_KEY, {})
    all_saved = mrn is not None and all((mrn, a.decoded.sha256) in saved for a in savable)
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
        with errors.shown("Not saved: ") as outcome:
            outcome_saved = save_analyses(actor, savable, mrn=mrn, threshold=threshold)
        if not outcome.failed:
            saved |= {(outcome_saved.mrn, sha): scan_id for sha, scan_id in outcome_saved.scan_ids.items()}
            already = outcome_saved.already_there
            st.success(
                f"Saved to patient {literal(outcome_saved.mrn)}'s record: {outcome_saved.new_scans} new scan(s), "
                f"{outcome_saved.new_predictions} new prediction(s)."
                + (f" {already} scan(s) were already in the record and are kept once." if already else "")
            )
    if mrn and any((mrn, a.decoded.sha256) in saved for a in analyses):
        st.page_link(
            pages().history, label=f"Open patient {literal(mrn)}'s history", query_params={"patient": mrn}, icon="📋"
        )
    return mrn


def main() -> None:
    actor = require()
    st.title("Diagnose a scan")
    settings = get_settings()
    threshold = settings.confidence_threshold

    models = active_models()
    if not models:
        no_model_message(actor)
        return
    models = loaded_models(models, actor)
    if not models:
        return
    gate, gate_note = gate_for(models)
    uploads = current_uploads(actor, settings)
    if not uploads:
        st.caption("Models in use: " + ", ".join(f"{m.label}: {literal(m.name)}" for m in models) + ". " + gate_note)
        return
    if gate is None:
        st.info(gate_note)
    shown_anyway = {u.decoded.sha256 for u in uploads if st.session_state.get(anyway_key(u.decoded))}
    analyses = analyse(
        uploads, models, threshold=threshold, gate=gate, answers=CachedAnswers(), shown_anyway=shown_anyway
    )
    audited = st.session_state.setdefault(AUDITED_KEY, set())
    audited |= audit_predictions(actor, analyses, already=audited)

    if len(analyses) > 1:
        summary_table(analyses, models)
    mrn = save_panel(actor, analyses, threshold)
    keep_unsaved(actor, analyses)
    view = map_controls(models)
    saved = st.session_state.get(SAVED_KEY, {})
    for position, a in enumerate(analyses):
        scan_id = saved.get((mrn, a.decoded.sha256))
        label = f"{literal(a.name)} · {literal(answer_text(a, models))}"
        with st.expander(label, expanded=len(analyses) == 1):
            show_analysis(
                a,
                models,
                threshold=threshold,
                view=view,
                saved_as=f"Saved to patient {literal(mrn)}'s record (scan #{scan_id})." if scan_id else None,
                position=position,
            )


main()
