"""user profile and code format

users gain what an application provisions over the API (recovery_email,
display_name) and when that last changed (updated_at); backup_codes record how
many symbols their code has (12 before the check-symbol format, 16 after), so a
page can invite the holder of an old set to regenerate. Existing codes are the
old format: the server default 12 says so.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import domain.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, no batch: rebuilding `users` on SQLite cascades deletes (see 0005).
    op.add_column("users", sa.Column("recovery_email", sa.String(length=320), nullable=True))
    op.add_column("users", sa.Column("display_name", sa.String(length=200), nullable=True))
    op.add_column(
        "users",
        sa.Column("updated_at", domain.models.UtcDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "backup_codes",
        sa.Column("symbols", sa.Integer(), nullable=False, server_default="12"),
    )


def downgrade() -> None:
    op.drop_column("backup_codes", "symbols")
    op.drop_column("users", "updated_at")
    op.drop_column("users", "display_name")
    op.drop_column("users", "recovery_email")
