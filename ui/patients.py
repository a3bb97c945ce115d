"""Choosing the patient a scan belongs to."""

import streamlit as st

from db.scans import PATIENT_ID_RULE, search_mrns, validate_mrn
from db.schema import mrn_key
from db.session import read_scope
from ui.text import literal

# Typing in the search box filters these client-side; more than this and the list gets unwieldy.
MAX_LISTED_PATIENTS = 1000
EXISTING, NEW = "Existing patient", "New patient"


def patient_picker(*, key: str, suggested: str | None = None) -> str | None:
    """An existing patient (searchable) or a deliberately entered new id; None until a valid id is given."""
    with read_scope() as session:
        known = search_mrns(session=session, limit=MAX_LISTED_PATIENTS)
    # A new suggestion (another DICOM header) starts fresh widgets instead of keeping the previous choice.
    key = f"{key}:{suggested or ''}"
    # Ids are matched whatever their case and surrounding spaces: a suggested `mrn-4711` is MRN-4711's record.
    by_key = {mrn_key(mrn): mrn for mrn in known}
    if suggested is not None and mrn_key(suggested) in by_key:
        suggested = by_key[mrn_key(suggested)]
    start_new = not known or (suggested is not None and suggested not in known)
    mode = st.radio("Patient", [EXISTING, NEW], index=1 if start_new else 0, horizontal=True, key=f"{key}:mode")
    hint = " Prefilled from the DICOM header: check it before saving." if suggested else ""
    if mode == EXISTING:
        choice = st.selectbox(
            "Patient id",
            known,
            index=known.index(suggested) if suggested in known else None,
            placeholder="Type to search the patient ids",
            help="Patients already in the record." + hint,
            key=f"{key}:existing",
        )
        return choice
    typed = st.text_input(
        "New patient id",
        value=suggested or "",
        max_chars=64,
        help=PATIENT_ID_RULE + hint,
        key=f"{key}:new",
    )
    if not typed.strip():
        return None
    try:
        mrn = validate_mrn(typed)
    except ValueError as exc:
        st.error(str(exc))
        return None
    if (existing := by_key.get(mrn_key(mrn))) is not None:
        same = (
            "" if existing == mrn else f" (ids are matched whatever their case: {literal(mrn)} is {literal(existing)})"
        )
        st.caption(f"Patient {literal(existing)} is already in the record{same}: the scans are added to their history.")
        return existing
    return mrn
