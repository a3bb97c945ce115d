"""Sessions the server owns, the sign-in throttle's counters, the app's hash key, and an audit log whose
entries are chained by hash and that refuses replacing inserts (SQLite) and TRUNCATE (PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 09:00:00

"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.audit import HASHED_FIELDS, chain_hash
from db.migrations.audit_rules import AUTOINCREMENT, REFUSAL, actions_check, sqlite_triggers

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIONS = (
    "sign_in sign_in_failed sign_in_throttled sign_out session_expired upload prediction patient_viewed scan_viewed "
    "review export scan_deleted patient_deleted batch_started training_started job_cancelled job_requeued "
    "model_promoted model_rolled_back model_downloaded user_created user_disabled user_enabled password_reset "
    "role_changed user_unlocked list_viewed refused"
).split()
ACTIONS_BEFORE = [a for a in ACTIONS if a not in ("user_unlocked", "list_viewed")]
SESSION_ENDS = "'signed_out', 'idle', 'expired', 'disabled', 'role_changed', 'password_reset'"


def _chain_existing_entries() -> None:
    """Give the entries written before this revision their hashes, oldest first."""
    types = {"at": sa.DateTime(), "user_id": sa.Integer()}
    log = sa.table("audit_log", sa.column("id", sa.Integer()), *(sa.column(n, types.get(n, sa.Text())) for n in HASHED_FIELDS))
    bind = op.get_bind()
    prev_hash = None
    for entry_id, *fields in bind.execute(sa.select(*log.columns).order_by(log.c.id)).all():
        entry_hash = chain_hash(prev_hash, fields)
        bind.execute(
            sa.text("UPDATE audit_log SET prev_hash = :prev, entry_hash = :hash WHERE id = :id"),
            {"prev": prev_hash, "hash": entry_hash, "id": entry_id},
        )
        prev_hash = entry_hash


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    op.execute(
        sa.text("INSERT INTO app_secrets (name, value) VALUES ('audit_hash_key', :value)").bindparams(
            value=secrets.token_hex(32)
        )
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("handoff_hash", sa.String(64), nullable=True),
        sa.Column("handoff_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("ended_reason", sa.String(16), nullable=True),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
        sa.UniqueConstraint("handoff_hash", name=op.f("uq_sessions_handoff_hash")),
        sa.CheckConstraint(
            f"ended_reason IS NULL OR ended_reason IN ({SESSION_ENDS})", name=op.f("ck_sessions_ended_reason")
        ),
        **AUTOINCREMENT,
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"])
    op.create_table(
        "sign_in_throttle",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("name_hash", sa.String(64), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(), nullable=True),
    )
    op.create_index(op.f("ix_sign_in_throttle_name_hash"), "sign_in_throttle", ["name_hash"])
    op.create_index(op.f("ix_sign_in_throttle_last_failure_at"), "sign_in_throttle", ["last_failure_at"])

    # The audit log gains its chain and two actions. Its append-only triggers are lifted for exactly as long as
    # it takes to hash the entries already there.
    if sqlite:
        sqlite_triggers(create=False)
    else:
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    with op.batch_alter_table("audit_log", recreate="always" if sqlite else "auto", table_kwargs=AUTOINCREMENT) as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("entry_hash", sa.String(64), nullable=True))
        batch.drop_constraint(op.f("ck_audit_log_action"), type_="check")
        batch.create_check_constraint(op.f("ck_audit_log_action"), actions_check(ACTIONS))
    _chain_existing_entries()
    with op.batch_alter_table("audit_log", recreate="always" if sqlite else "auto", table_kwargs=AUTOINCREMENT) as batch:
        batch.alter_column("entry_hash", existing_type=sa.String(64), nullable=False)
    if sqlite:
        sqlite_triggers(create=True)
    else:
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        sqlite_triggers(create=False)
    else:
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
        op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    # Entries of the two new actions cannot stay under the older CHECK: they go with this revision.
    op.execute(sa.text("DELETE FROM audit_log WHERE action IN ('user_unlocked', 'list_viewed')"))
    with op.batch_alter_table("audit_log", recreate="always" if sqlite else "auto", table_kwargs=AUTOINCREMENT) as batch:
        batch.drop_constraint(op.f("ck_audit_log_action"), type_="check")
        batch.create_check_constraint(op.f("ck_audit_log_action"), actions_check(ACTIONS_BEFORE))
        batch.drop_column("entry_hash")
        batch.drop_column("prev_hash")
    if sqlite:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
            )
    else:
        op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    op.drop_index(op.f("ix_sign_in_throttle_last_failure_at"), table_name="sign_in_throttle")
    op.drop_index(op.f("ix_sign_in_throttle_name_hash"), table_name="sign_in_throttle")
    op.drop_table("sign_in_throttle")
    op.drop_index(op.f("ix_sessions_user_id"), table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("app_secrets")
