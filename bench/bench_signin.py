"""Sign-in check: what one backup-code attempt costs with 1, 5 and 20 codes.

Ours: `verify_backup_code` end to end (its own unit of work on SQLite: user and
policy reads, the locator lookup, one argon2id verification, the failure counted
and audited), with a wrong code that carries a real code's locator, so the
stored hash is verified rather than the dummy one.

The common approach: verify the input against every stored hash in turn. Only
the argon2 loop is timed (hashes already in memory, no database), which flatters
it. Both use the default argon2id profile (19 MiB, t=2, p=1). Ratios are against
our 1-code time in the same run.

    python -m bench.bench_signin
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from cryptography.fernet import Fernet

from bench.common import interleaved_ms, markdown_table
from domain import accounts, audit, signin
from domain import totp as otp
from domain.codes import CodeHasher, generate_codes
from domain.limits import Limits
from infra.migrate import upgrade
from infra.services import Services
from infra.settings import Settings
from tests.support.builders import add_code_set, add_enrollment
from tests.support.codes import wrong_secret

SIZES = (1, 5, 20)
REPEAT = 21
OURS = "ours: locator + one verification"
COMMON = "every hash in turn"
CTX = audit.Context(principal_id="bench", role="service")


def _services(tmp: Path) -> Services:
    settings = Settings.from_env(
        env={
            "MFA_VAR_DIR": str(tmp),
            "MFA_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "MFA_SECRET_KEY": Fernet.generate_key().decode(),
        },
        dotenv=None,
    )  # default argon2id profile
    upgrade(settings.database_url)
    services = Services.build(settings)
    # Every timed attempt is a failure: a throttle would turn them into cheap refusals.
    big = 10**9
    services.limits = Limits(threshold=big, user_threshold=big, consecutive_cap=big)
    return services


def _user_with_codes(services: Services, count: int) -> tuple[str, list[str], str]:
    """(org id, stored hashes, a wrong code with a real locator)."""
    org_id = f"bench-{count}"
    codes = generate_codes(count)
    hashes = services.hasher.hash_all(codes)
    now = datetime.now(UTC)
    with services.unit_of_work() as uow:
        accounts.create_org(uow, org_id, audit.CLI)
        user = accounts.create_user(uow, org_id, "alice", None, audit.CLI)
        pairs = list(zip(codes, hashes, strict=True))
        add_enrollment(uow.session, services, user.id, otp.new_secret(), now)
        add_code_set(uow.session, user.id, pairs, now)
    # well formed (its check symbol right), so it is judged, not refused as mistyped
    return org_id, hashes, wrong_secret(codes[-1].display).replace("-", "")


def _ours(services: Services, org_id: str, wrong: str) -> None:
    with services.unit_of_work() as uow:
        result = signin.verify_backup_code(
            uow, services, org_id, "alice", wrong, datetime.now(UTC), CTX
        )
    assert not result.accepted and not result.mistyped


def _every_hash(hasher: CodeHasher, hashes: list[str], wrong: str) -> None:
    for stored in hashes:
        if hasher.verify(stored, wrong):
            raise AssertionError("a wrong code matched")


def run() -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        services = _services(Path(tmp))
        try:
            cases: dict[str, Callable[[], object]] = {}
            for n in SIZES:
                org, hashes, wrong = _user_with_codes(services, n)
                cases[f"ours-{n}"] = partial(_ours, services, org, wrong)
                cases[f"loop-{n}"] = partial(_every_hash, services.hasher, hashes, wrong)
            ms = interleaved_ms(cases, REPEAT, warmup=1)  # warm-up: argon2, SQLite caches
        finally:
            services.close()
    base = ms["ours-1"]
    rows: list[dict[str, object]] = []
    for key, label in (("ours", OURS), ("loop", COMMON)):
        for n in SIZES:
            value = ms[f"{key}-{n}"]
            rows.append({"approach": label, "codes": n, "ms": value, "ratio": value / base})
    return rows


if __name__ == "__main__":
    print(markdown_table(run()))
