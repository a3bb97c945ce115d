"""Reading the audit log is for admins; its CSV export is itself an audited action."""

import csv
import io

from db.audit import COLUMNS, AuditFilters, count_entries, iter_entries
from db.session import read_scope
from domain import AuditAction
from services.auth import Actor, audit, require_admin
from services.reports import csv_cell


def export_csv(actor: Actor | None, *, filters: AuditFilters) -> bytes:
    """Every matching entry, oldest first, as CSV (cells a spreadsheet would run as formulas are quoted)."""
    require_admin(actor, "export the audit log")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    with read_scope() as session:
        total = count_entries(session=session, filters=filters)
        for row in iter_entries(session=session, filters=filters):
            writer.writerow([csv_cell("" if getattr(row, c) is None else str(getattr(row, c))) for c in COLUMNS])
    audit(actor, AuditAction.EXPORT, target="audit log CSV", detail=f"{total} entries; filters {filters}")
    return out.getvalue().encode("utf-8")
