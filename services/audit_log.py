"""Reading the audit log is for admins; its CSV export is itself an audited action, and so is every list of
patient records a person browses (once per query and page)."""

import csv
import io

from db.audit import COLUMNS, AuditFilters, ChainCheck, count_entries, describe, iter_entries, verify_chain
from db.session import read_scope
from domain import AuditAction
from services.auth import Actor, audit, require_admin, require_signed_in
from services.reports import csv_cell


def export_csv(actor: Actor | None, *, filters: AuditFilters) -> bytes:
    """Every matching entry, oldest first, as CSV (cells a spreadsheet would run as formulas are quoted)."""
    actor = require_admin(actor, "export the audit log")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    with read_scope() as session:
        total = count_entries(session=session, filters=filters)
        for row in iter_entries(session=session, filters=filters):
            writer.writerow([csv_cell("" if getattr(row, c) is None else str(getattr(row, c))) for c in COLUMNS])
    audit(actor, AuditAction.EXPORT, target="audit log CSV", detail=f"{total} entries; filters: {describe(filters)}")
    return out.getvalue().encode("utf-8")


def check_chain(actor: Actor | None) -> ChainCheck:
    """Recompute the log's hash chain (what `python -m db.audit verify` does), for an admin."""
    require_admin(actor, "check the audit log")
    with read_scope() as session:
        return verify_chain(session=session)


def list_viewed(actor: Actor | None, what: str, *, filters: object, page: int, shown: int, total: int) -> None:
    """Record that a list of records (every patient's predictions, another user's batch results) was shown:
    which list, which page of how many rows, under which filters. Pages call it once per query and page
    (ui/audited.py), not on every redraw."""
    actor = require_signed_in(actor, f"list {what}")
    detail = f"page {page}: {shown} of {total} row(s); filters: {describe(filters)}"
    audit(actor, AuditAction.LIST_VIEWED, target=what, detail=detail)
