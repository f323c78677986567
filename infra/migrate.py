"""Applying Alembic migrations from code (the CLI and tests use this).

On PostgreSQL the service connects as a role that owns nothing (MFA_DATABASE_URL)
and migrations run as the owner (MFA_MIGRATION_DATABASE_URL). After the Alembic
revisions, `upgrade` grants the application role what it needs and no more:
every table and sequence of the schema in full (SELECT, INSERT, UPDATE,
DELETE), except the audit trail: audit_events and audit_checkpoints SELECT and
INSERT only, audit_heads SELECT, INSERT and UPDATE (a trigger lets a head move
forward only). Run after every upgrade and idempotent, so tables that later
revisions add are covered without each revision naming the role.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

import migrations
from infra.db import make_engine
from infra.settings import Settings

MIGRATIONS_DIR = Path(migrations.__file__).parent

# Tables whose history must not change: the application role may only add rows.
APPEND_ONLY = ("audit_events", "audit_checkpoints")
# May move forward (UPDATE, trigger-checked) but never be deleted.
FORWARD_ONLY = ("audit_heads",)
NOT_GRANTED = ("alembic_version",)


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head", *, app_url: str | None = None) -> None:
    """Migrate as `database_url` (the owner); on PostgreSQL, when `app_url` names
    another role, grant that role its privileges (see the module's docstring)."""
    command.upgrade(alembic_config(database_url), revision)
    role = application_role(database_url, app_url)
    if role is not None:
        engine = make_engine(database_url)
        try:
            with engine.begin() as conn:
                grant(conn, role)
        finally:
            engine.dispose()


def upgrade_settings(settings: Settings) -> None:
    """`db upgrade` and `run`: as MFA_MIGRATION_DATABASE_URL where set."""
    upgrade(settings.migration_url, app_url=settings.database_url)


def application_role(migration_url: str, app_url: str | None) -> str | None:
    """The role to grant to: the app URL's user, on PostgreSQL, when not the owner."""
    if app_url is None:
        return None
    owner, app = make_url(migration_url), make_url(app_url)
    if app.get_backend_name() != "postgresql" or owner.get_backend_name() != "postgresql":
        return None
    if app.username is None or app.username == owner.username:
        return None
    return app.username


def _ident(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def grant(conn: Connection, role: str) -> None:
    """Idempotent GRANTs (and REVOKEs) for the application role on the public schema."""
    who = _ident(conn, role)
    tables = list(
        conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        ).scalars()
    )
    conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {who}"))
    conn.execute(text(f"REVOKE CREATE ON SCHEMA public FROM {who}"))
    conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who}"))
    for table in tables:
        name = _ident(conn, table)
        conn.execute(text(f"REVOKE ALL ON TABLE {name} FROM {who}"))
        if table in NOT_GRANTED:
            conn.execute(text(f"GRANT SELECT ON TABLE {name} TO {who}"))
        elif table in APPEND_ONLY:
            conn.execute(text(f"GRANT SELECT, INSERT ON TABLE {name} TO {who}"))
        elif table in FORWARD_ONLY:
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE ON TABLE {name} TO {who}"))
        else:
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {name} TO {who}"))


def current_heads(database_url: str) -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
