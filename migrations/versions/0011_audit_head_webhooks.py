"""audit_heads.webhooks

How many webhooks the organization has, kept on its chain head: audit.append reads
it with the head's row lock and looks up the webhooks only when there are any
(webhook create and delete change it in their own transactions, which append an
event and so hold the same lock). Existing heads start from the webhooks they have.

Revision ID: 0011
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, no batch: rebuilding audit_heads on SQLite would drop its triggers (0003).
    op.add_column(
        "audit_heads", sa.Column("webhooks", sa.Integer(), nullable=False, server_default="0")
    )
    op.execute(
        "UPDATE audit_heads SET webhooks = (SELECT count(*) FROM webhooks w "
        "WHERE w.org_id = audit_heads.org_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("audit_heads", recreate="never") as batch:
        batch.drop_column("webhooks")
