"""PACS: find studies on the hospital's DICOMweb server and send an MR series to the prediction queue; or upload
a series by hand (a multi-frame file, files of one series, a zip) or name a server folder of one."""

from datetime import date

import pandas as pd
import streamlit as st

from domain import UserError
from services.dicom_intake import Intake, receive_files, receive_folder
from services.dicomweb import MODALITIES, SeriesRow, StudyRow, search_series, search_studies
from settings import get_settings
from ui.auth import require
from ui.jobs import job_panel
from ui.nav import pages
from ui.text import literal
from worker.submit import QueueUnavailable, submit_intake, submit_pull

STUDIES_KEY, SERIES_KEY, JOBS_KEY, NOTICE_KEY = "pacs_studies", "pacs_series", "pacs_jobs", "pacs_notice"
ANY_MODALITY = "any"
REFUSED_SHOWN = 100


def search_form() -> None:
    with st.form("pacs_search"):
        first = st.columns(2)
        patient_id = first[0].text_input("Patient id", key="pacs_patient_id", help="* and ? match any characters")
        patient_name = first[1].text_input("Patient name", key="pacs_patient_name", help="e.g. DOE^J*")
        second = st.columns(2)
        dates: tuple[date, ...] = second[0].date_input("Study date range", value=[], key="pacs_dates")
        modality = second[1].selectbox("Modality in the study", [*MODALITIES, ANY_MODALITY], key="pacs_modality")
        submitted = st.form_submit_button("Search the PACS", type="primary")
    if not submitted:
        return
    try:
        st.session_state[STUDIES_KEY] = search_studies(
            ACTOR,
            patient_id=patient_id,
            patient_name=patient_name,
            date_from=dates[0] if len(dates) > 0 else None,
            date_to=dates[1] if len(dates) > 1 else None,
            modality=None if modality == ANY_MODALITY else modality,
        )
        st.session_state.pop(SERIES_KEY, None)
    except UserError as exc:
        st.error(str(exc))


def studies_table(studies: list[StudyRow]) -> None:
    if not studies:
        st.info("No study matches.")
        return
    st.caption(f"{len(studies)} study(ies), newest first.")
    st.dataframe(
        pd.DataFrame(
            {
                "Patient id": [s.patient_id for s in studies],
                "Name": [s.patient_name for s in studies],
                "Study date": [s.study_date for s in studies],
                "Description": [s.description for s in studies],
                "Modalities": [s.modalities for s in studies],
                "Series": [s.series for s in studies],
                "Instances": [s.instances for s in studies],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    names = {s.study_uid: f"{s.patient_id} · {s.study_date} · {s.description or s.study_uid}" for s in studies}
    chosen = st.selectbox("Open a study", list(names), format_func=names.get, index=None, key="pacs_study")
    if chosen is None:
        return
    if st.session_state.get(SERIES_KEY, (None,))[0] != chosen:
        try:
            st.session_state[SERIES_KEY] = (chosen, search_series(ACTOR, study_uid=chosen))
        except UserError as exc:
            st.error(str(exc))
            return
    series_table(st.session_state[SERIES_KEY][1])


def series_table(series: list[SeriesRow]) -> None:
    st.dataframe(
        pd.DataFrame(
            {
                "Number": [s.number for s in series],
                "Modality": [s.modality for s in series],
                "Description": [s.description for s in series],
                "Instances": [s.instances for s in series],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    mr = {s.series_uid: s for s in series if s.modality == "MR"}
    if not mr:
        st.info("This study has no MR series: only MR series can be predicted.")
        return
    chosen = st.selectbox(
        "MR series",
        list(mr),
        format_func=lambda uid: (
            f"{mr[uid].number or ''} {mr[uid].description or uid} ({mr[uid].instances or '?'} instances)"
        ),
        key="pacs_series_pick",
    )
    if st.button("Send this series to prediction", type="primary", key="pacs_send"):
        try:
            job_id = submit_pull(ACTOR, study_uid=mr[chosen].study_uid, series_uid=chosen)
        except UserError as exc:
            st.error(str(exc))
            return
        st.session_state.setdefault(JOBS_KEY, []).insert(0, job_id)


def intake_outcome(intake: Intake, origin: str) -> None:
    try:
        queued = submit_intake(intake, actor=ACTOR, origin=origin)
    except QueueUnavailable as exc:
        st.error(f"The files were received, but their series could not be queued: {exc}")
        return
    if queued:
        st.success(
            f"{intake.slices} new slice(s) in {len(queued)} series, queued for prediction "
            f"(job {', '.join(str(j) for j in queued.values())})."
        )
        st.session_state.setdefault(JOBS_KEY, [])[:0] = list(queued.values())
    elif not intake.refused:
        st.info("Every slice of these files was received before: nothing new to predict.")
    if intake.refused:
        with st.expander(f"Files refused ({len(intake.refused)})", expanded=not queued):
            st.dataframe([{"file": name, "why": why} for name, why in intake.refused[:REFUSED_SHOWN]], hide_index=True)


def upload_form() -> None:
    settings = get_settings()
    files = st.file_uploader(
        "DICOM files of one series, a multi-frame file, or a zip of them",
        type=["dcm", "dicom", "zip"],
        accept_multiple_files=True,
        key="pacs_upload",
        help=f"Each file up to {settings.max_upload_mb} MB; a zip up to {settings.max_zip_mb} MB.",
    )
    if files and st.button("Predict the uploaded series", key="pacs_upload_go"):
        try:
            intake_outcome(receive_files(ACTOR, [(f.name, f.getvalue()) for f in files]), "an upload")
        except UserError as exc:
            st.error(str(exc))
    roots = get_settings().allowed_data_roots
    folder = st.text_input(
        "Or a folder on the server holding one series",
        key="pacs_folder",
        help="Under: " + ", ".join(str(r) for r in roots),
    )
    if folder.strip() and st.button("Predict the folder's series", key="pacs_folder_go"):
        try:
            intake_outcome(receive_folder(ACTOR, folder.strip()), f"the folder {folder.strip()}")
        except UserError as exc:
            st.error(str(exc))


ACTOR = require()
st.title("PACS")
settings = get_settings()
st.caption(
    f"The DICOM listener takes series as AE title **{literal(settings.dicom_ae_title)}** on port "
    f"{settings.dicom_port}; a series is predicted {settings.dicom_series_idle_s:g} s after its last instance."
)
search_tab, upload_tab = st.tabs(["Search the PACS", "Upload a series"])
with search_tab:
    if not settings.dicomweb_url:
        st.info("No DICOMweb server is configured: set DICOMWEB_URL to search the PACS from here.")
    else:
        st.caption(f"DICOMweb server: {literal(settings.dicomweb_url)}")
        search_form()
        if STUDIES_KEY in st.session_state:
            studies_table(st.session_state[STUDIES_KEY])
with upload_tab:
    upload_form()
for job_id in st.session_state.get(JOBS_KEY, [])[:5]:
    job_panel(job_id, key="pacs_jobs")
if st.session_state.get(JOBS_KEY):
    st.page_link(pages().series, label="See the series and their answers", icon=":material/stacks:")
