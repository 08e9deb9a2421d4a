"""Initial schema: users, sessions, API keys, workers, models, instances, usage.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Migrations spell their types out rather than importing corral's table
module: a migration must keep meaning what it meant when it was written.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("password_change_required", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("source", _json(), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("backend_version", sa.String(64), nullable=True),
        sa.Column("backend_parameters", _json(), nullable=False),
        sa.Column("env", _json(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("placement_strategy", sa.String(16), nullable=False),
        sa.Column("worker_selector", _json(), nullable=False),
        sa.Column("gpu_selector", _json(), nullable=False),
        sa.Column("cpu_offloading", sa.Boolean(), nullable=False),
        sa.Column("distributed_inference", sa.Boolean(), nullable=False),
        sa.Column("restart_on_error", sa.Boolean(), nullable=False),
        sa.Column("categories", _json(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("labels", _json(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=True),
        _ts("heartbeat_at", nullable=True),
        sa.Column("system_reserved", _json(), nullable=False),
        sa.Column("status", _json(), nullable=True),
        sa.Column("credential_id", sa.String(32), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
        sa.UniqueConstraint("credential_id", name="uq_workers_credential_id"),
        sa.UniqueConstraint("name", name="uq_workers_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_keys_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("user_id", "name", name="uq_api_keys_user_id_name"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sessions_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(160), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=True),
        sa.Column("devices", _json(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=True),
        sa.Column("download_progress", sa.Float(), nullable=True),
        sa.Column("restart_count", sa.Integer(), nullable=False),
        sa.Column("claim", _json(), nullable=True),
        sa.Column("command", _json(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_instances_model_id_models", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["worker_id"],
            ["workers.id"],
            name="fk_instances_worker_id_workers",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint("name", name="uq_instances_name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_instances_model_id", "instances", ["model_id"])
    op.create_index("ix_instances_state", "instances", ["state"])
    op.create_index("ix_instances_worker_id", "instances", ["worker_id"])
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_usage_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage"),
        sa.UniqueConstraint("user_id", "model_name", "day", name="uq_usage_user_id_model_name_day"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_usage_user_id", "usage", ["user_id"])


def downgrade() -> None:
    for table in ("usage", "instances", "sessions", "api_keys", "workers", "models", "users"):
        op.drop_table(table)
