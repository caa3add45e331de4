"""outbox claim lease: when an event was claimed, and when delivery gave up

Revision ID: 0004
Revises: 0003

Claims taken before this revision have no time. Those of events not yet
delivered get their event's creation time: their owner may well have died
(that is why the lease exists), so the first runner after the lease passes
takes them over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reference.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("claimed_at", UTCDateTime))
    op.add_column("events", sa.Column("failed_at", UTCDateTime))
    events = sa.table(
        "events",
        sa.column("claimed_by", sa.String),
        sa.column("claimed_at", UTCDateTime),
        sa.column("created_at", UTCDateTime),
        sa.column("delivered_at", UTCDateTime),
    )
    op.execute(
        events.update()
        .where(events.c.claimed_by.is_not(None), events.c.delivered_at.is_(None))
        .values(claimed_at=events.c.created_at)
    )


def downgrade() -> None:
    # Batch mode: SQLite cannot drop a column in place.
    with op.batch_alter_table("events") as batch:
        batch.drop_column("failed_at")
        batch.drop_column("claimed_at")
