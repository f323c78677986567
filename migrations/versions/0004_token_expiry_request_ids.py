"""token expiry, kind and last use; server request ids; shared throttle counters

api_tokens gains expires_at (null: never), kind ('token' or 'session') and
last_used_at; audit_events gains server_request_id (null on older events,
which keeps their hashes: the canonical form leaves a null one out);
request_throttles holds one-minute window counters shared by every process.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import domain.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): audit_events' append-only triggers stay put.
    op.add_column(
        "api_tokens",
        sa.Column("expires_at", domain.models.UtcDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "api_tokens",
        sa.Column("kind", sa.String(length=16), server_default="token", nullable=False),
    )
    op.add_column(
        "api_tokens",
        sa.Column("last_used_at", domain.models.UtcDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "audit_events", sa.Column("server_request_id", sa.String(length=64), nullable=True)
    )
    op.create_table(
        "request_throttles",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_request_throttles")),
    )


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN (SQLite 3.35+ too): a batch copy would lose the triggers.
    op.drop_table("request_throttles")
    op.drop_column("audit_events", "server_request_id")
    op.drop_column("api_tokens", "last_used_at")
    op.drop_column("api_tokens", "kind")
    op.drop_column("api_tokens", "expires_at")
