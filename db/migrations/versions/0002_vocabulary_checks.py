"""Columns constrained to the vocabulary of domain.py; on SQLite, ids never re-used after a delete.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 14:40:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLASSES = "'glioma', 'meningioma', 'notumor', 'pituitary'"
STATUSES = "'queued', 'running', 'succeeded', 'failed', 'cancelled'"
FRAMEWORKS = "'torch', 'keras'"
SOURCES = "'upload', 'batch'"
# table -> [(constraint name, condition)]; the names follow the schema's naming convention (ck_<table>_<name>).
CHECKS = {
    "scans": [("source", f"source IN ({SOURCES})")],
    "predictions": [
        ("label", f"label IN ({CLASSES})"),
        ("reviewer_label", f"reviewer_label IS NULL OR reviewer_label IN ({CLASSES})"),
        ("review_status", "review_status IN ('pending', 'confirmed', 'corrected')"),
        ("source", f"source IN ({SOURCES})"),
    ],
    "training_runs": [("framework", f"framework IN ({FRAMEWORKS})"), ("status", f"status IN ({STATUSES})")],
    "model_versions": [("framework", f"framework IN ({FRAMEWORKS})")],
    "jobs": [("kind", "kind IN ('train', 'batch', 'selfcheck')"), ("status", f"status IN ({STATUSES})")],
    "batch_items": [
        ("status", "status IN ('done', 'error', 'skipped')"),
        ("true_label", f"true_label IS NULL OR true_label IN ({CLASSES})"),
    ],
}
NO_ID_REUSE = {"patients", "scans", "predictions", "training_runs", "model_versions", "jobs"}


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in CHECKS.keys() | NO_ID_REUSE:
        # SQLite rebuilds the table (batch mode): that is the only way to add a CHECK or AUTOINCREMENT there.
        kwargs = {"sqlite_autoincrement": True} if sqlite and table in NO_ID_REUSE else {}
        with op.batch_alter_table(table, recreate="always" if sqlite else "auto", table_kwargs=kwargs) as batch:
            for name, condition in CHECKS.get(table, []):
                batch.create_check_constraint(op.f(f"ck_{table}_{name}"), condition)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in CHECKS.keys() | NO_ID_REUSE:
        with op.batch_alter_table(table, recreate="always" if sqlite else "auto") as batch:
            for name, _ in CHECKS.get(table, []):
                batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
