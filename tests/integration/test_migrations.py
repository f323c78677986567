"""`alembic upgrade head` then autogenerate finds no drift, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from domain.db import make_engine
from domain.migrate import current_heads
from domain.models import Base
from domain.settings import Settings


def _drift(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_sqlite_schema_matches_models(settings: Settings) -> None:
    assert _drift(settings.database_url) == []


@pytest.mark.postgres
def test_postgres_schema_matches_models(pg_database_url: str) -> None:
    assert _drift(pg_database_url) == []


def test_one_head_and_every_table_created(settings: Settings) -> None:
    assert len(current_heads(settings.database_url)) == 1
    engine = create_engine(settings.database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
