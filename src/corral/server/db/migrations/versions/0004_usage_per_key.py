"""Usage per API key as well as per user, model and day.

The table was never written before this revision (the gateway starts
metering with it), so it is made again rather than altered.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _create(per_key: bool) -> None:
    key_columns = [sa.Column("api_key_id", sa.String(32), nullable=False)] if per_key else []
    unique = ["user_id", *(["api_key_id"] if per_key else []), "model_name", "day"]
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        *key_columns,
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_usage_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage"),
        sa.UniqueConstraint(*unique, name="uq_usage_" + "_".join(unique)),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_usage_user_id", "usage", ["user_id"])
    if per_key:
        op.create_index("ix_usage_day", "usage", ["day"])


def upgrade() -> None:
    op.drop_table("usage")
    _create(per_key=True)


def downgrade() -> None:
    op.drop_table("usage")
    _create(per_key=False)
