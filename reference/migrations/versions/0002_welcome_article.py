"""data: insert the Welcome article

Revision ID: 0002
Revises: 0001

Deliberately not idempotent, like many real data migrations: it inserts
without checking, so a revision executed twice leaves two Welcome articles.
That makes a double migration visible in the content, not only in the ledger.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from reference.models import UTCDateTime, utc_now

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

articles = sa.table(
    "articles",
    sa.column("title", sa.String),
    sa.column("body", sa.Text),
    sa.column("version", sa.Integer),
    sa.column("created_at", UTCDateTime),
    sa.column("updated_at", UTCDateTime),
)


def upgrade() -> None:
    now = utc_now()
    op.execute(
        articles.insert().values(
            title="Welcome",
            body="This site was set up by a migration.",
            version=1,
            created_at=now,
            updated_at=now,
        )
    )


def downgrade() -> None:
    op.execute(articles.delete().where(articles.c.title == "Welcome"))
