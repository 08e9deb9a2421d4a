"""rpc-servers that helper workers run for distributed llama.cpp instances,
and the layers each instance's engine reports per device.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rpc_servers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name="fk_rpc_servers_instance_id_instances",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.id"],
            name="fk_rpc_servers_worker_id_workers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rpc_servers"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_rpc_servers_instance_id", "rpc_servers", ["instance_id"])
    op.create_index("ix_rpc_servers_worker_id", "rpc_servers", ["worker_id"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("layers", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("layers")
    op.drop_index("ix_rpc_servers_worker_id", "rpc_servers")
    op.drop_index("ix_rpc_servers_instance_id", "rpc_servers")
    op.drop_table("rpc_servers")
