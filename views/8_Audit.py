"""Audit log (admins): who did what to which record, when and from which session; filtered, paged, exported,
and its hash chain checked."""

from datetime import timedelta

import streamlit as st

from db.audit import AuditFilters, audit_page, count_entries
from db.session import read_scope
from domain import AuditAction, Role
from services import audit_log
from services.clock import today, utc_bounds, zone_name
from ui.audit_view import ACTION_NAMES, entries_frame
from ui.auth import require
from ui.text import literal

ACTOR = require(Role.ADMIN)
PER_PAGE = 100
ANY = "any"

st.title("Audit log")
st.caption(
    "Every sign-in, view, upload, prediction, review, export, delete, job and model or user change. Entries are "
    f"only ever added, each chained to the one before by its hash; times are in {zone_name()}."
)

user_col, action_col, patient_col, range_col = st.columns(4)
username = user_col.text_input("User", max_chars=64, key="audit_user")
action = action_col.selectbox(
    "Action",
    [ANY, *[a.value for a in AuditAction]],
    format_func=lambda a: a if a == ANY else ACTION_NAMES[AuditAction(a)],
    key="audit_action",
)
patient = patient_col.text_input("Patient id", max_chars=64, key="audit_patient")
now = today()
period = range_col.date_input(f"Dates ({zone_name()})", (now - timedelta(days=30), now), key="audit_dates")
start, end = (
    (period if isinstance(period, tuple) and len(period) == 2 else (period, period)) if period else (None, None)
)
since, until = utc_bounds(start, end) if start and end else (None, None)
filters = AuditFilters(
    username=username or None,
    action=None if action == ANY else action,
    patient_mrn=patient or None,
    since=since,
    until=until,
)

with read_scope() as session:
    total = count_entries(session=session, filters=filters)
pages = max(1, -(-total // PER_PAGE))
page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key="audit_page") - 1
with read_scope() as session:
    rows = audit_page(session=session, filters=filters, page=int(page), per_page=PER_PAGE)
st.caption(f"{total} entries match; newest first.")
st.dataframe(entries_frame(rows), hide_index=True, key="audit_table")

download_col, check_col = st.columns(2)
download_col.download_button(
    f"Download these {total} entries (CSV, times in UTC)",
    data=lambda: audit_log.export_csv(ACTOR, filters=filters),  # written (and audited) when clicked
    file_name=f"audit-{now:%Y%m%d}.csv",
    mime="text/csv",
    key="audit_csv",
    on_click="ignore",
    disabled=total == 0,
)
if check_col.button("Check the hash chain", key="audit_check"):
    check = audit_log.check_chain(ACTOR)
    (st.success if check.problem is None else st.error)(literal(str(check)))
