"""A scratch PostgreSQL database: for a test session, one test, or a benchmark."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url, text

from infra.migrate import upgrade
from tests.support.services import POSTGRES_URL, require_service


def _with_user(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


def owner_url(app_url: str, server_url: str = POSTGRES_URL) -> str:
    """The owner's URL of a scratch database that fresh_postgres_database yielded
    (for a test that tampers the way only the owner can)."""
    return _with_user(app_url, make_url(server_url).username or "postgres")


@contextmanager
def fresh_postgres_database(
    prefix: str, *, migrate: bool = True, server_url: str = POSTGRES_URL
) -> Iterator[str]:
    """A fresh PostgreSQL database, migrated by its owner; yields the URL of an
    application role of its own that owns nothing (as MFA_DATABASE_URL is in
    deployment; owner_url() gives the owner's). Its sessions are ended, it and
    the role are dropped after. `migrate=False`: left empty, for `db upgrade`.
    `server_url`: the server and owner to use (the benchmarks name their own)."""
    require_service("PostgreSQL", server_url, 5432)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    role = f"{name}_app"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    app_url = _with_user(url, role)
    try:
        if migrate:
            upgrade(url, app_url=app_url)
        yield app_url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
