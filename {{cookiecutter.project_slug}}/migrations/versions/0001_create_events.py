"""create events

Revision ID: 0001
Revises:
Create Date: 2026-11-21 00:00:00
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_created_at_id", "events", ["created_at", "id"])
    op.create_index(
        "ix_events_kind_created_at_id", "events", ["kind", "created_at", "id"]
    )
    op.create_index(
        "ix_events_owner_id_created_at_id", "events", ["owner_id", "created_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_events_owner_id_created_at_id", table_name="events")
    op.drop_index("ix_events_kind_created_at_id", table_name="events")
    op.drop_index("ix_events_created_at_id", table_name="events")
    op.drop_table("events")
