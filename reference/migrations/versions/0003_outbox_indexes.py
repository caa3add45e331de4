"""indexes for the cron publish window and the outbox poll

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_articles_publish_at", "articles", ["publish_at"])
    op.create_index("ix_events_claimed_by", "events", ["claimed_by"])


def downgrade() -> None:
    op.drop_index("ix_events_claimed_by", "events")
    op.drop_index("ix_articles_publish_at", "articles")
