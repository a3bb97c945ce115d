"""Users who sign in, who submitted each job (and its idempotency key), the append-only audit log, and
tombstones of deleted batch files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIONS = (
    "sign_in sign_in_failed sign_in_throttled sign_out session_expired upload prediction patient_viewed scan_viewed "
    "review export scan_deleted patient_deleted batch_started training_started job_cancelled job_requeued "
    "model_promoted model_rolled_back model_downloaded user_created user_disabled user_enabled password_reset "
    "role_changed refused"
).split()
REFUSAL = "the audit log is append-only"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    autoincrement = {"sqlite_autoincrement": True}
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'clinician')", name=op.f("ck_users_role")),
        **autoincrement,
    )
    op.create_index(op.f("ix_users_username"), "users", ["username"], unique=True)
    listed = ", ".join(f"'{action}'" for action in ACTIONS)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=True),
        sa.Column("patient_mrn", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.CheckConstraint(f"action IN ({listed})", name=op.f("ck_audit_log_action")),
        **autoincrement,
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index("ix_audit_log_username_at", "audit_log", ["username", "at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    op.create_index("ix_audit_log_patient_at", "audit_log", ["patient_mrn", "at"])
    op.create_index("ix_audit_log_client_at", "audit_log", ["client", "at"])
    # Nothing the app runs may rewrite history: the database itself refuses to change or remove an entry.
    if sqlite:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    op.create_table(
        "batch_tombstones",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "path_sha256", name="uq_batch_tombstone_path"),
    )
    op.create_index(op.f("ix_batch_tombstones_job_id"), "batch_tombstones", ["job_id"])
    with op.batch_alter_table("jobs", recreate="always" if sqlite else "auto", table_kwargs=autoincrement) as batch:
        batch.add_column(sa.Column("submitted_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(64), nullable=True))
        batch.create_foreign_key(op.f("fk_jobs_submitted_by_users"), "users", ["submitted_by"], ["id"])
        batch.create_unique_constraint(op.f("uq_jobs_idempotency_key"), ["idempotency_key"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("jobs", recreate="always" if sqlite else "auto") as batch:
        batch.drop_constraint(op.f("uq_jobs_idempotency_key"), type_="unique")
        batch.drop_constraint(op.f("fk_jobs_submitted_by_users"), type_="foreignkey")
        batch.drop_column("idempotency_key")
        batch.drop_column("submitted_by")
    if sqlite:
        op.execute("DROP TRIGGER audit_log_no_update")
        op.execute("DROP TRIGGER audit_log_no_delete")
    else:
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    op.drop_index(op.f("ix_batch_tombstones_job_id"), table_name="batch_tombstones")
    op.drop_table("batch_tombstones")
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_users_username"), table_name="users")
    op.drop_table("users")
