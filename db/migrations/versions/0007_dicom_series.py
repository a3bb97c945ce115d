"""DICOM series received from the PACS, their slices, and the results waiting to be sent back; the job kinds
and audit actions that go with them.

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-06 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.migrations.audit_rules import set_actions

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_KINDS_BEFORE = ("train", "batch", "selfcheck")
JOB_KINDS = (*JOB_KINDS_BEFORE, "series", "send")
ACTIONS_BEFORE = (
    "sign_in sign_in_failed sign_in_throttled sign_out session_expired upload prediction patient_viewed scan_viewed "
    "review export scan_deleted patient_deleted batch_started training_started job_cancelled job_requeued "
    "model_promoted model_rolled_back model_downloaded user_created user_disabled user_enabled password_reset "
    "role_changed user_unlocked list_viewed refused patient_merged scan_assigned"
).split()
ACTIONS = (
    *ACTIONS_BEFORE,
    "dicom_refused",
    "series_received",
    "series_queued",
    "series_viewed",
    "pacs_searched",
    "results_sent",
)


def _listed(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    autoincrement = {"sqlite_autoincrement": True}
    op.create_table(
        "dicom_series",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.Integer(), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=True),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("series_description", sa.String(256), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("study_date", sa.String(16), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("sender", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("report_series_uid", sa.String(64), nullable=True),
        sa.Column("capture_series_uid", sa.String(64), nullable=True),
        sa.Column("first_received_at", sa.DateTime(), nullable=False),
        sa.Column("last_received_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("source IN ('dimse', 'dicomweb', 'upload')", name=op.f("ck_dicom_series_source")),
        sa.CheckConstraint(
            "status IN ('receiving', 'queued', 'answered', 'failed')", name=op.f("ck_dicom_series_status")
        ),
        sa.UniqueConstraint("series_uid", name=op.f("uq_dicom_series_series_uid")),
        **autoincrement,
    )
    op.create_index(op.f("ix_dicom_series_study_uid"), "dicom_series", ["study_uid"])
    op.create_index(op.f("ix_dicom_series_patient_id"), "dicom_series", ["patient_id"])
    op.create_index(op.f("ix_dicom_series_status"), "dicom_series", ["status"])
    op.create_table(
        "series_slices",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "series_id", sa.Integer(), sa.ForeignKey("dicom_series.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("position", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("staged_file", sa.String(512), nullable=True),
        sa.Column("scan_id", sa.Integer(), sa.ForeignKey("scans.id", ondelete="SET NULL"), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("values_file", sa.String(512), nullable=True),
        sa.Column("values_scale", sa.Float(), nullable=True),
        sa.Column("values_offset", sa.Float(), nullable=True),
        sa.Column("window_center", sa.Float(), nullable=True),
        sa.Column("window_width", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('received', 'done', 'skipped', 'error')", name=op.f("ck_series_slices_status")
        ),
        sa.UniqueConstraint("series_id", "sop_instance_uid", "frame", name="uq_series_slice_instance_frame"),
    )
    op.create_index(op.f("ix_series_slices_series_id"), "series_slices", ["series_id"])
    op.create_index(op.f("ix_series_slices_scan_id"), "series_slices", ["scan_id"])
    op.create_table(
        "dicom_sends",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "series_id", sa.Integer(), sa.ForeignKey("dicom_series.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("what", sa.String(256), nullable=False),
        sa.Column("destination", sa.String(256), nullable=False),
        sa.Column("folder", sa.String(512), nullable=False),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f("ck_dicom_sends_status")),
        **autoincrement,
    )
    op.create_index(op.f("ix_dicom_sends_series_id"), "dicom_sends", ["series_id"])
    op.create_index(op.f("ix_dicom_sends_status"), "dicom_sends", ["status"])
    _job_kinds(JOB_KINDS, sqlite=sqlite)
    set_actions(ACTIONS)


def _job_kinds(kinds: Sequence[str], *, sqlite: bool) -> None:
    with op.batch_alter_table(
        "jobs", recreate="always" if sqlite else "auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_kind"), f"kind IN ({_listed(kinds)})")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index(op.f("ix_dicom_sends_status"), table_name="dicom_sends")
    op.drop_index(op.f("ix_dicom_sends_series_id"), table_name="dicom_sends")
    op.drop_table("dicom_sends")
    op.drop_index(op.f("ix_series_slices_scan_id"), table_name="series_slices")
    op.drop_index(op.f("ix_series_slices_series_id"), table_name="series_slices")
    op.drop_table("series_slices")
    op.drop_index(op.f("ix_dicom_series_status"), table_name="dicom_series")
    op.drop_index(op.f("ix_dicom_series_patient_id"), table_name="dicom_series")
    op.drop_index(op.f("ix_dicom_series_study_uid"), table_name="dicom_series")
    op.drop_table("dicom_series")
    # The series and send jobs have no task to run them any more. The audit log keeps the actions it allows:
    # entries already written with them cannot be removed, by design.
    op.execute(f"DELETE FROM jobs WHERE kind NOT IN ({_listed(JOB_KINDS_BEFORE)})")
    _job_kinds(JOB_KINDS_BEFORE, sqlite=sqlite)
