"""attempt limits: per-source failure rows, per-user standing per factor

users.locked_until (one shared lockout) gives way to attempt_limits (one row a
user and factor: consecutive failures, the user-wide window, the permanent
lock); auth_failures gains the source it came from and the mistyped-batch mark.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import domain.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempt_limits",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("factor", sa.String(length=16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", domain.models.UtcDateTime(timezone=True), nullable=True),
        sa.Column("window_failures", sa.Integer(), nullable=False),
        sa.Column("locked_at", domain.models.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_attempt_limits_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "factor", name=op.f("pk_attempt_limits")),
    )
    # No batch (table rebuild) on SQLite: rebuilding `users` drops it, and with
    # foreign keys on that cascades into every enrollment and code. SQLite (3.35+)
    # adds and drops these columns in place.
    op.add_column("auth_failures", sa.Column("source", sa.String(length=64), nullable=True))
    op.add_column(
        "auth_failures",
        sa.Column("audited", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_auth_failures_user_kind_source",
        "auth_failures",
        ["user_id", "kind", "source", "occurred_at"],
        unique=False,
    )
    op.drop_column("users", "locked_until")


def downgrade() -> None:
    op.add_column(
        "users",
        sa.Column("locked_until", domain.models.UtcDateTime(timezone=True), nullable=True),
    )
    op.drop_index("ix_auth_failures_user_kind_source", table_name="auth_failures")
    op.drop_column("auth_failures", "audited")
    op.drop_column("auth_failures", "source")
    op.drop_table("attempt_limits")
