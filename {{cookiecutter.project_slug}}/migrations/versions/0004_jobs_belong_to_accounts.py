"""jobs belong to an account

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 00:00:01

Jobs recorded before accounts existed had no owner; they are given to an
account named ``legacy`` (created only if there are such jobs), which no
token can read until an operator issues one for it.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
    op.execute(
        "INSERT INTO accounts (name, created_at) "
        "SELECT 'legacy', CURRENT_TIMESTAMP "
        "WHERE EXISTS (SELECT 1 FROM jobs) "
        "AND NOT EXISTS (SELECT 1 FROM accounts WHERE name = 'legacy')"
    )
    op.execute(
        "UPDATE jobs SET owner_id = (SELECT id FROM accounts WHERE name = 'legacy')"
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("owner_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            op.f("fk_jobs_owner_id_accounts"), "accounts", ["owner_id"], ["id"]
        )
        batch_op.create_index("ix_jobs_owner_id", ["owner_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_owner_id")
        batch_op.drop_constraint(op.f("fk_jobs_owner_id_accounts"), type_="foreignkey")
        batch_op.drop_column("owner_id")
