"""notifications

organizations gain notify_users (default true) and support_contact; mail_deliveries
holds each mail to send (the address stays here, out of the audit trail), and
repudiation_tickets the hashes of the "If this wasn't you" links.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

import domain.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC = domain.models.UtcDateTime(timezone=True)


def upgrade() -> None:
    # In place, no batch: rebuilding `organizations` on SQLite would cascade (see 0005).
    op.add_column(
        "organizations",
        sa.Column("notify_users", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column(
        "organizations", sa.Column("support_contact", sa.String(length=200), nullable=True)
    )
    op.create_table(
        "mail_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("recipient_kind", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("leased_until", UTC, nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("ticket_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name="fk_mail_deliveries_org_id_organizations"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_mail_deliveries_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mail_deliveries"),
        sa.UniqueConstraint(
            "event_id", "kind", "recipient_kind", name="event_kind_recipient"
        ),
    )
    op.create_index(
        "ix_mail_deliveries_status_next", "mail_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_mail_deliveries_user_id", "mail_deliveries", ["user_id"])
    op.create_table(
        "repudiation_tickets",
        sa.Column("ticket_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_repudiation_tickets_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket_hash", name="pk_repudiation_tickets"),
    )
    op.create_index("ix_repudiation_tickets_user_id", "repudiation_tickets", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_repudiation_tickets_user_id", table_name="repudiation_tickets")
    op.drop_table("repudiation_tickets")
    op.drop_index("ix_mail_deliveries_user_id", table_name="mail_deliveries")
    op.drop_index("ix_mail_deliveries_status_next", table_name="mail_deliveries")
    op.drop_table("mail_deliveries")
    op.drop_column("organizations", "support_contact")
    op.drop_column("organizations", "notify_users")
