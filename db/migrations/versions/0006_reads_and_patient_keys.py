"""Reads: a clinician's final word belongs to the scan (append-only); the per-prediction reviews become reads.
Patients get a matching key (case and surrounding whitespace ignored); scans a brain-MRI check's refusal;
the audit log two more actions (patient merges, patients assigned to scans).

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-06 09:00:00

"""

import unicodedata
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from db.migrations.audit_rules import set_actions

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
READ_LABELS = (*CLASSES, "not_assessable")
ACTIONS_0004 = (
    "sign_in sign_in_failed sign_in_throttled sign_out session_expired upload prediction patient_viewed scan_viewed "
    "review export scan_deleted patient_deleted batch_started training_started job_cancelled job_requeued "
    "model_promoted model_rolled_back model_downloaded user_created user_disabled user_enabled password_reset "
    "role_changed user_unlocked list_viewed refused"
).split()
ACTIONS = (*ACTIONS_0004, "patient_merged", "scan_assigned")
# What a read says is never changed; its scan may be (a merge of two patients joins their copies of one image).
READ_CONTENT = "label, note, read_by, user_id, read_at, from_prediction_id"
READ_REFUSAL = "a read is never changed: a new read supersedes it"
REVIEW_COLUMNS = ("review_status", "reviewer_label", "reviewer", "review_note", "reviewed_at")
AUTOINCREMENT = {"sqlite_autoincrement": True}


def mrn_key(mrn: str) -> str:
    """As db.scans.mrn_key (a migration keeps its own copy: the app's rule may change after it ran)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", mrn).strip().casefold())


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    _patient_keys()
    op.add_column("scans", sa.Column("refusal", sa.Text(), nullable=True))
    op.create_table(
        "reads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.Integer(), sa.ForeignKey("scans.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("read_by", sa.String(128), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("read_at", sa.DateTime(), nullable=False),
        sa.Column("from_prediction_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(f"label IN ({_listed(READ_LABELS)})", name=op.f("ck_reads_label")),
        **AUTOINCREMENT,
    )
    op.create_index(op.f("ix_reads_scan_id"), "reads", ["scan_id"])
    op.create_index(op.f("ix_reads_read_at"), "reads", ["read_at"])
    _reviews_to_reads()
    _append_only("reads", READ_REFUSAL, columns=READ_CONTENT, sqlite=sqlite)
    _drop_review_columns(sqlite)
    set_actions(ACTIONS)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # The audit log keeps every entry, merges included, so its wider list of actions stays.
    _add_review_columns(sqlite)
    _reads_to_reviews()
    _drop_append_only("reads", sqlite=sqlite)
    op.drop_index(op.f("ix_reads_read_at"), table_name="reads")
    op.drop_index(op.f("ix_reads_scan_id"), table_name="reads")
    op.drop_table("reads")
    op.drop_column("scans", "refusal")
    op.drop_index(op.f("ix_patients_mrn_key"), table_name="patients")
    op.drop_column("patients", "mrn_key")


def _listed(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _patient_keys() -> None:
    """Each patient's key; of twins (ids equal but for case or whitespace) the first keeps it, the others wait
    (NULL) for an admin to merge them."""
    op.add_column("patients", sa.Column("mrn_key", sa.String(256), nullable=True))
    bind = op.get_bind()
    patients = sa.table("patients", sa.column("id", sa.Integer), sa.column("mrn", sa.String), sa.column("mrn_key"))
    taken: set[str] = set()
    for pid, mrn in bind.execute(sa.select(patients.c.id, patients.c.mrn).order_by(patients.c.id)).all():
        key = mrn_key(mrn)
        if key in taken:
            continue
        taken.add(key)
        bind.execute(patients.update().where(patients.c.id == pid).values(mrn_key=key))
    op.create_index(op.f("ix_patients_mrn_key"), "patients", ["mrn_key"], unique=True)


def _reviews_to_reads() -> None:
    """The latest review of each scan becomes its read; when its predictions' reviews disagree, the latest of each
    final class is kept, oldest first, so the scan lists both and waits in the review queue for a new read."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, scan_id, label, review_status, reviewer_label, reviewer, review_note, reviewed_at, created_at "
            "FROM predictions WHERE review_status IN ('confirmed', 'corrected') ORDER BY scan_id, reviewed_at, id"
        )
    ).all()
    users = {name: uid for uid, name in bind.execute(sa.text("SELECT id, username FROM users")).all()}
    latest: dict[tuple[int, str], dict] = {}
    for pid, scan_id, label, status, reviewer_label, reviewer, note, reviewed_at, created_at in rows:
        final = reviewer_label if status == "corrected" and reviewer_label else label
        name = (reviewer or "").strip() or "unknown"
        latest[(scan_id, final)] = {
            "scan_id": scan_id,
            "label": final,
            "note": note,
            "read_by": name[:128],
            "user_id": users.get(name.lower()),
            "read_at": _as_datetime(reviewed_at or created_at),
            "from_prediction_id": pid,
        }
    reads = sorted(latest.values(), key=lambda r: (r["scan_id"], r["read_at"], r["from_prediction_id"]))
    if reads:
        table = sa.table("reads", *(sa.column(name) for name in reads[0]))
        bind.execute(table.insert(), reads)


def _as_datetime(value: object) -> datetime:
    # SQLite hands back text through a plain SELECT.
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _append_only(table: str, refusal: str, *, columns: str, sqlite: bool) -> None:
    if sqlite:
        op.execute(
            f"CREATE TRIGGER {table}_no_rewrite BEFORE UPDATE OF {columns} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        )
        return
    op.execute(
        f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{refusal}'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OF {columns} ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
    )


def _drop_append_only(table: str, *, sqlite: bool) -> None:
    if sqlite:
        op.execute(f"DROP TRIGGER {table}_no_rewrite")
        return
    op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
    op.execute(f"DROP FUNCTION {table}_append_only()")


def _drop_review_columns(sqlite: bool) -> None:
    op.drop_index("ix_predictions_filters", table_name="predictions")
    # Nothing refers to predictions, so SQLite may rebuild the table.
    with op.batch_alter_table(
        "predictions", recreate="always" if sqlite else "auto", table_kwargs=AUTOINCREMENT if sqlite else {}
    ) as batch:
        batch.drop_constraint(op.f("ck_predictions_reviewer_label"), type_="check")
        batch.drop_constraint(op.f("ck_predictions_review_status"), type_="check")
        for column in REVIEW_COLUMNS:
            batch.drop_column(column)
    op.create_index("ix_predictions_filters", "predictions", ["label", "needs_review"])


def _add_review_columns(sqlite: bool) -> None:
    op.drop_index("ix_predictions_filters", table_name="predictions")
    with op.batch_alter_table(
        "predictions", recreate="always" if sqlite else "auto", table_kwargs=AUTOINCREMENT if sqlite else {}
    ) as batch:
        batch.add_column(sa.Column("review_status", sa.String(16), nullable=False, server_default="pending"))
        batch.add_column(sa.Column("reviewer_label", sa.String(16), nullable=True))
        batch.add_column(sa.Column("reviewer", sa.String(128), nullable=True))
        batch.add_column(sa.Column("review_note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_predictions_reviewer_label"), f"reviewer_label IS NULL OR reviewer_label IN ({_listed(CLASSES)})"
        )
        batch.create_check_constraint(
            op.f("ck_predictions_review_status"), "review_status IN ('pending', 'confirmed', 'corrected')"
        )
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("review_status", server_default=None)
    op.create_index("ix_predictions_filters", "predictions", ["label", "needs_review", "review_status"])


def _reads_to_reviews() -> None:
    """Each scan's latest read back onto every prediction of the scan (a read of "not assessable" is lost)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT scan_id, label, read_by, note, read_at FROM reads ORDER BY scan_id, read_at, id")
    ).all()
    latest = {scan_id: (label, read_by, note, read_at) for scan_id, label, read_by, note, read_at in rows}
    for scan_id, (label, read_by, note, read_at) in latest.items():
        if label not in CLASSES:
            continue
        values = {"label": label, "reviewer": read_by, "note": note, "at": _as_datetime(read_at), "scan": scan_id}
        bind.execute(
            sa.text(
                "UPDATE predictions SET review_status = CASE WHEN label = :label THEN 'confirmed' ELSE 'corrected' "
                "END, reviewer_label = :label, reviewer = :reviewer, review_note = :note, reviewed_at = :at "
                "WHERE scan_id = :scan"
            ),
            values,
        )
