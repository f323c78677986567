"""attempt limits: per-source failure rows, per-user standing per factor

users.locked_until (one shared lockout) gives way to attempt_limits (one row a
user and factor: consecutive failures, the user-wide window, the permanent
lock); auth_failures gains the source it came from and the mistyped-batch mark.

Revision ID: 0005
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

import domain.models

revision = "0005"
down_revision = "0002"
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
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("audited", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "ix_auth_failures_user_kind_source",
            ["user_id", "kind", "source", "occurred_at"],
            unique=False,
        )
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.alter_column("audited", server_default=None)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("locked_until")


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("locked_until", domain.models.UtcDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_failures_user_kind_source")
        batch_op.drop_column("audited")
        batch_op.drop_column("source")
    op.drop_table("attempt_limits")
