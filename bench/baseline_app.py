"""The intake benchmark's baseline: a bare Falcon endpoint doing one INSERT + commit.

Served by the same gunicorn command and config as the API (bench.bench_intake),
on the same database: `gunicorn bench.baseline_app:application`. It reads the
same JSON body and answers 202 with an id, and nothing more: no authentication,
no locks, no audit, no broker. The table `bench_baseline` is created by the
benchmark before the server starts.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import falcon
from sqlalchemy import Column, DateTime, MetaData, String, Table, insert

from infra.db import make_engine

metadata = MetaData()
baseline = Table(
    "bench_baseline",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("totp", String(6), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class Insert:
    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)  # the pool settings the API uses

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        totp = body.get("totp") if isinstance(body, dict) else None
        if not isinstance(totp, str) or len(totp) != 6:
            raise falcon.HTTPBadRequest(description="totp must be 6 digits")
        row_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(
                insert(baseline).values(id=row_id, totp=totp, created_at=datetime.now(UTC))
            )
        resp.status = falcon.HTTP_202
        resp.media = {"id": row_id}


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app(database_url: str) -> falcon.App[falcon.Request, falcon.Response]:
    app: falcon.App[falcon.Request, falcon.Response] = falcon.App()
    app.add_route("/insert", Insert(database_url))
    app.add_route("/healthz", Health())
    return app


def __getattr__(name: str) -> object:
    # Built on first access (gunicorn's import of `application`), not at import, so the
    # benchmark can import this module for its table without a database URL.
    if name == "application":
        return create_app(os.environ["MFA_DATABASE_URL"])
    raise AttributeError(name)
