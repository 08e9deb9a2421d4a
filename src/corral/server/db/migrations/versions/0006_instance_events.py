"""Each instance's state history, and a generation a restart request bumps.

The history is written by a trigger on ``instances`` rather than by the
services: an instance's state changes in a dozen places (placement, worker
reports, liveness, releases, bulk updates), and only the database sees the
old and the new value of every one of them. The trigger keeps the last
``KEEP`` transitions per instance, so an instance that crashes in a loop does
not grow the table without end.

A later migration that makes SQLite copy ``instances`` (``batch_alter_table``
in ``recreate="always"`` mode, or a change SQLite cannot ALTER) drops these
triggers with the old table and must create them again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEEP = 100

# Only the newest KEEP rows of this instance stay.
_TRIM = f"""
DELETE FROM instance_events WHERE instance_id = NEW.id AND id <= (
    SELECT id FROM instance_events WHERE instance_id = NEW.id
    ORDER BY id DESC LIMIT 1 OFFSET {KEEP}
)"""

# SQLAlchemy reads SQLite datetimes with six fractional digits; strftime's %f gives three.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
_SQLITE_RECORD = f"""
    INSERT INTO instance_events (instance_id, state, message, at)
    VALUES (NEW.id, NEW.state, NEW.state_message, {_SQLITE_NOW});
    {_TRIM};
"""

_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER instance_state_inserted AFTER INSERT ON instances
    BEGIN {_SQLITE_RECORD} END""",
    f"""CREATE TRIGGER instance_state_changed AFTER UPDATE OF state ON instances
    WHEN NEW.state IS NOT OLD.state
    BEGIN {_SQLITE_RECORD} END""",
]

_POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION corral_instance_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
            INSERT INTO instance_events (instance_id, state, message, at)
            VALUES (NEW.id, NEW.state, NEW.state_message, clock_timestamp());
            {_TRIM};
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER instance_state_events AFTER INSERT OR UPDATE OF state ON instances
    FOR EACH ROW EXECUTE FUNCTION corral_instance_event()""",
]


def upgrade() -> None:
    op.create_table(
        "instance_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name="fk_instance_events_instance_id_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_instance_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_instance_events_instance_id", "instance_events", ["instance_id"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _POSTGRES_TRIGGERS if postgres else _SQLITE_TRIGGERS:
        op.execute(statement)
    # Instances that exist already start their history with their state now.
    op.execute(
        "INSERT INTO instance_events (instance_id, state, message, at) "
        f"SELECT id, state, state_message, {'now()' if postgres else _SQLITE_NOW} FROM instances"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER instance_state_events ON instances")
        op.execute("DROP FUNCTION corral_instance_event()")
    else:
        op.execute("DROP TRIGGER instance_state_changed")
        op.execute("DROP TRIGGER instance_state_inserted")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("generation")
    op.drop_index("ix_instance_events_instance_id", "instance_events")
    op.drop_table("instance_events")
