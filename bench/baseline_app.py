"""The benchmarks' baselines: bare Falcon endpoints doing only the irreducible work.

Served by the same gunicorn command and config as the API (bench.common.gunicorn),
with the same settings: `gunicorn bench.baseline_app:application`.

- `POST /insert` (bench.bench_intake): one INSERT + commit. It reads the same
  JSON body and answers 202 with an id, and nothing more: no authentication, no
  locks, no audit, no broker. The table `bench_baseline` is created by the
  benchmark before the server starts.
- `POST /verify` (bench.bench_signin_load): one argon2id verification at the
  configured parameters (MFA_ARGON2_*, read as the API reads them) of the body's
  `code` against the hash of BASELINE_CODE, made when the process starts. No
  authentication, database, limits, slots or audit.
- `POST /counted` (bench.bench_signin_load): the least an input that is counted
  but never hashed can cost: the API's own token lookup (domain.tokens.lookup, one
  read) and one INSERT into `bench_baseline`, each its own autocommit statement.
  No user, policy, limits, budget read, audit or transaction.
- `POST /verify-counted` (bench.bench_signin_load): the same with /verify's one
  argon2id verification of the body's `code` between the two statements: the
  least a verification that is authenticated and recorded can cost.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import falcon
from sqlalchemy import Column, DateTime, MetaData, String, Table, insert

from domain import tokens
from domain.codes import CodeHasher
from infra.db import make_engine
from infra.settings import Settings

# The one code /verify accepts (not a secret: nothing else knows of it).
BASELINE_CODE = "BASE-L1NE-C0DE"

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


class Verify:
    def __init__(self, hasher: CodeHasher) -> None:
        self.hasher = hasher
        self.stored = hasher.hash(BASELINE_CODE)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        code = body.get("code") if isinstance(body, dict) else None
        if not isinstance(code, str):
            raise falcon.HTTPBadRequest(description="code must be a string")
        resp.media = {"accepted": self.hasher.verify(self.stored, code)}


class Counted:
    """/counted; with a `verify`, /verify-counted: the hash between the two."""

    def __init__(self, database_url: str, verify: Verify | None = None) -> None:
        self.engine = make_engine(database_url)
        self.verify = verify

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        source = body.get("client_ip") if isinstance(body, dict) else None
        scheme, _, presented = (req.get_header("Authorization") or "").partition(" ")
        if not isinstance(source, str) or scheme.lower() != "bearer":
            raise falcon.HTTPBadRequest(description="client_ip and a bearer token")
        now = datetime.now(UTC)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if tokens.lookup(conn, presented, now) is None:
                raise falcon.HTTPUnauthorized()
        accepted = False
        if self.verify is not None:
            code = body.get("code")
            if not isinstance(code, str):
                raise falcon.HTTPBadRequest(description="code must be a string")
            accepted = self.verify.hasher.verify(self.verify.stored, code)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(
                insert(baseline).values(id=str(uuid.uuid4()), totp="000000", created_at=now)
            )
        resp.media = {"accepted": accepted, "mistyped": self.verify is None}


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app(settings: Settings) -> falcon.App[falcon.Request, falcon.Response]:
    argon2 = settings.argon2
    hasher = CodeHasher(argon2.memory_kib, argon2.time_cost, argon2.parallelism)
    app: falcon.App[falcon.Request, falcon.Response] = falcon.App()
    app.add_route("/insert", Insert(settings.database_url))
    verify = Verify(hasher)
    app.add_route("/verify", verify)
    app.add_route("/counted", Counted(settings.database_url))
    app.add_route("/verify-counted", Counted(settings.database_url, verify))
    app.add_route("/healthz", Health())
    return app


def __getattr__(name: str) -> object:
    # Built on first access (gunicorn's import of `application`), not at import, so the
    # benchmark can import this module for its table without a database URL.
    if name == "application":
        return create_app(Settings.from_env(dotenv=None))
    raise AttributeError(name)
