"""audit checkpoints append-only, chain heads forward-only, a count of signed checkpoints

The checkpoints are what makes a rewritten or cut chain show, so they get the
audit trail's own protection: UPDATE, DELETE (and TRUNCATE on PostgreSQL) are
refused. A chain head may only move forward: its seq never goes back, its hash
never changes at the same seq, and its new `checkpoints` count (the checkpoints
ever signed for it) never goes down, so deleting every checkpoint row still
shows. The GRANTs to the application role are not here: infra.migrate runs
them after every upgrade, so tables of later migrations are covered too.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PG_UP = """
CREATE OR REPLACE FUNCTION audit_checkpoints_refuse_change() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit_checkpoints is append-only (% refused)', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_checkpoints_no_update_delete
  BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION audit_checkpoints_refuse_change();

CREATE TRIGGER audit_checkpoints_no_truncate
  BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION audit_checkpoints_refuse_change();

CREATE OR REPLACE FUNCTION audit_heads_forward_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'audit_heads only move forward (% refused)', TG_OP
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.org_id <> OLD.org_id OR NEW.seq < OLD.seq
     OR (NEW.seq = OLD.seq AND NEW.hash <> OLD.hash)
     OR NEW.checkpoints < OLD.checkpoints THEN
    RAISE EXCEPTION 'audit_heads only move forward (UPDATE backwards refused)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_heads_forward_only
  BEFORE UPDATE OR DELETE ON audit_heads
  FOR EACH ROW EXECUTE FUNCTION audit_heads_forward_only();

CREATE TRIGGER audit_heads_no_truncate
  BEFORE TRUNCATE ON audit_heads
  FOR EACH STATEMENT EXECUTE FUNCTION audit_heads_forward_only();
"""

PG_DOWN = """
DROP TRIGGER IF EXISTS audit_heads_no_truncate ON audit_heads;
DROP TRIGGER IF EXISTS audit_heads_forward_only ON audit_heads;
DROP FUNCTION IF EXISTS audit_heads_forward_only();
DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints;
DROP TRIGGER IF EXISTS audit_checkpoints_no_update_delete ON audit_checkpoints;
DROP FUNCTION IF EXISTS audit_checkpoints_refuse_change();
"""

SQLITE_UP = [
    """CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only (UPDATE refused)'); END""",
    """CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only (DELETE refused)'); END""",
    """CREATE TRIGGER audit_heads_forward_only BEFORE UPDATE ON audit_heads
       WHEN NEW.org_id <> OLD.org_id OR NEW.seq < OLD.seq
         OR (NEW.seq = OLD.seq AND NEW.hash <> OLD.hash)
         OR NEW.checkpoints < OLD.checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_heads only move forward (UPDATE backwards refused)'); END""",
    """CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
       BEGIN SELECT RAISE(ABORT, 'audit_heads only move forward (DELETE refused)'); END""",
]

SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS audit_heads_no_delete",
    "DROP TRIGGER IF EXISTS audit_heads_forward_only",
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_delete",
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_update",
]


def upgrade() -> None:
    # Existing heads start from the checkpoints they already have.
    with op.batch_alter_table("audit_heads") as batch:
        batch.add_column(
            sa.Column("checkpoints", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE audit_heads SET checkpoints = (SELECT count(*) FROM audit_checkpoints c "
        "WHERE c.org_id = audit_heads.org_id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_UP)
    else:
        for statement in SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_DOWN)
    else:
        for statement in SQLITE_DOWN:
            op.execute(statement)
    with op.batch_alter_table("audit_heads") as batch:
        batch.drop_column("checkpoints")
