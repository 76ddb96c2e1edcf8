"""create accounts and api tokens; events belong to an account

Revision ID: 0003
Revises: {{ '0002' if cookiecutter.use_celery == 'y' else '0001' }}
Create Date: 2026-11-30 00:00:00

Events already stored keep their owner: each distinct ``owner_id`` becomes
an account named ``owner-<id>`` with that id, so the new foreign key holds.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "{{ '0002' if cookiecutter.use_celery == 'y' else '0001' }}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_api_tokens_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_api_tokens_account_id"), "api_tokens", ["account_id"], unique=False
    )
    op.execute(
        "INSERT INTO accounts (id, name, created_at) "
        "SELECT DISTINCT owner_id, 'owner-' || owner_id, CURRENT_TIMESTAMP "
        "FROM events"
    )
    if op.get_bind().dialect.name == "postgresql":
        # Ids were inserted by hand: new accounts must number after them.
        op.execute(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'), "
            "COALESCE(MAX(id), 0) + 1, false) FROM accounts"
        )
    with op.batch_alter_table("events") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_events_owner_id_accounts"), "accounts", ["owner_id"], ["id"]
        )
        # Every read is one owner's now: kind is narrowed within an owner.
        batch_op.drop_index("ix_events_kind_created_at_id")
        batch_op.create_index(
            "ix_events_owner_id_kind_created_at_id",
            ["owner_id", "kind", "created_at", "id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_index("ix_events_owner_id_kind_created_at_id")
        batch_op.create_index(
            "ix_events_kind_created_at_id", ["kind", "created_at", "id"]
        )
        batch_op.drop_constraint(
            op.f("fk_events_owner_id_accounts"), type_="foreignkey"
        )
    op.drop_index(op.f("ix_api_tokens_account_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("accounts")
