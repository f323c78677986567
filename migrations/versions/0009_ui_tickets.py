"""ui tickets

ui_tickets holds the SHA-256 of each one-time link to the pages (mfa-codes ui-link,
POST /v1/users/{id}/ui-links); a browser session is an api_tokens row of kind
`session`, which needs no schema change.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

import domain.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC = domain.models.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ui_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("principal_id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_ui_tickets_org_id_organizations"
        ),
        sa.PrimaryKeyConstraint("ticket_hash", name="pk_ui_tickets"),
    )
    op.create_index("ix_ui_tickets_org_principal", "ui_tickets", ["org_id", "principal_id"])


def downgrade() -> None:
    op.drop_index("ix_ui_tickets_org_principal", table_name="ui_tickets")
    op.drop_table("ui_tickets")
