"""job errors as codes; what the reaper needs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 00:00:02

``jobs.error`` held the text of the exception a job failed with, SQL
included, and clients were shown it. It becomes ``error_code``, one of the
codes of ``jobs/errors.py``: jobs that failed to be sent get
``broker_unavailable``, every other failure ``internal_error``; the old
text is dropped. ``updated_at`` (when the row last changed) and
``requeues`` (how often the reaper sent the job again) let the reaper find
and bound stuck jobs; existing rows get their latest timestamp and 0.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("error_code", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("requeues", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE jobs SET error_code = CASE "
        "WHEN error LIKE 'could not enqueue%' THEN 'broker_unavailable' "
        "ELSE 'internal_error' END "
        "WHERE error IS NOT NULL OR status = 'failed'"
    )
    op.execute(
        "UPDATE jobs SET requeues = 0, "
        "updated_at = COALESCE(finished_at, started_at, created_at)"
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("error")
        batch_op.alter_column("requeues", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column(
            "updated_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.create_index("ix_jobs_status_updated_at", ["status", "updated_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.execute("UPDATE jobs SET error = error_code")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_status_updated_at")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("requeues")
        batch_op.drop_column("error_code")
