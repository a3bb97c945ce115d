"""Audit log (admins): who did what to which record, when and from which session; filtered, paged, exported."""

from datetime import date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from db.audit import COLUMNS, AuditFilters, audit_page, count_entries
from db.session import read_scope
from domain import AuditAction, Role
from services import audit_log
from ui.auth import require

ACTOR = require(Role.ADMIN)
PER_PAGE = 100
ANY = "any"

st.title("Audit log")
st.caption("Every sign-in, view, upload, prediction, review, export, delete, job and model or user change.")

user_col, action_col, patient_col, range_col = st.columns(4)
username = user_col.text_input("User", max_chars=64, key="audit_user")
action = action_col.selectbox("Action", [ANY, *[a.value for a in AuditAction]], key="audit_action")
patient = patient_col.text_input("Patient id", max_chars=64, key="audit_patient")
today = date.today()
period = range_col.date_input("Dates (UTC)", (today - timedelta(days=30), today), key="audit_dates")
start, end = (
    (period if isinstance(period, tuple) and len(period) == 2 else (period, period)) if period else (None, None)
)
filters = AuditFilters(
    username=username or None,
    action=None if action == ANY else action,
    patient_mrn=patient or None,
    since=datetime.combine(start, time.min) if start else None,
    until=datetime.combine(end, time.min) + timedelta(days=1) if end else None,
)

with read_scope() as session:
    total = count_entries(session=session, filters=filters)
pages = max(1, -(-total // PER_PAGE))
page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key="audit_page") - 1
with read_scope() as session:
    rows = audit_page(session=session, filters=filters, page=int(page), per_page=PER_PAGE)
st.caption(f"{total} entries match; newest first.")
st.dataframe(pd.DataFrame([r.__dict__ for r in rows], columns=list(COLUMNS)), hide_index=True, key="audit_table")


st.download_button(
    f"Download these {total} entries (CSV)",
    data=lambda: audit_log.export_csv(ACTOR, filters=filters),  # written (and audited) when clicked
    file_name=f"audit-{today:%Y%m%d}.csv",
    mime="text/csv",
    key="audit_csv",
    on_click="ignore",
    disabled=total == 0,
)
