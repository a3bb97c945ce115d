"""The sha256 of each file a model version's answers depend on besides its model file (ONNX exports, sidecar,
out-of-distribution statistics and report, pair report), recorded when made and checked when opened.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-06 04:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = "'onnx', 'onnx_int8', 'onnx_heatmap', 'sidecar', 'ood_stats', 'ood_report', 'pair_report'"


def upgrade() -> None:
    op.create_table(
        "model_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("model_version_id", "role", name=op.f("uq_model_files_model_version_id")),
        sa.CheckConstraint(f"role IN ({ROLES})", name=op.f("ck_model_files_role")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_model_files_model_version_id"), "model_files", ["model_version_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_model_files_model_version_id"), table_name="model_files")
    op.drop_table("model_files")
