"""Worker: what one regeneration costs against its irreducible work.

Ours: the `regeneration.process` Celery task's function, called in-process (no
broker round trip: that is the scaling benchmark's business), on a fresh
PostgreSQL database with the default argon2id profile (19 MiB, t=2, p=1) and 5
codes. That is both of its transactions: `mark_started`, then
`process_regeneration` (user lock, TOTP judged, old set deactivated, 5 hashes,
PDF and text rendered and encrypted, the audit events).

Baseline, measured in the same run and interleaved with ours: 5 argon2id hashes,
one `render_pdf` of the same sheet, and one transaction that inserts the 5 code
rows. The bar (docs/architecture.md): ours <= 1.25x the baseline.

When the bar is missed, a cProfile of a few more regenerations is printed (not
written to the table). BENCH_WORKER_PROFILE=1 prints it anyway.

    python -m bench.bench_worker
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

from bench.common import (
    enrolled_people,
    fresh_postgres,
    interleaved_ms,
    markdown_table,
    request_now,
    require_services,
    server_env,
    settings_from,
)
from domain import accounts
from domain.codes import generate_codes, new_set_id
from domain.models import BackupCode, Regeneration, new_id
from domain.sheets.render import SheetContent, render_pdf
from infra.services import Services
from workers.app import make_celery
from workers.tasks import register_tasks

REPEAT = int(os.environ.get("BENCH_WORKER_REPEAT", "21"))
WARMUP = 2
PROFILE_RUNS = 6
CODES = 5
BAR = 1.25


def _irreducible(services: Services, user_id: str) -> Callable[[], None]:
    """5 hashes + one PDF + one transaction inserting the 5 rows."""

    def work() -> None:
        now = datetime.now(UTC)
        codes = generate_codes(CODES)
        hashes = services.hasher.hash_all(codes)
        set_id = new_set_id()
        render_pdf(
            SheetContent(
                organization="bench",
                account="user0",
                set_id=set_id,
                generated_at=now,
                codes=tuple(c.display for c in codes),
            )
        )
        rows = [
            {
                "id": new_id(),
                "user_id": user_id,
                "set_id": set_id,
                "generation": 1,
                "position": c.position,
                "locator": c.locator,
                "hash": h,
                "created_at": now,
            }
            for c, h in zip(codes, hashes, strict=True)
        ]
        with services.unit_of_work() as uow:
            uow.session.execute(insert(BackupCode), rows)

    return work


def _parts(services: Services) -> dict[str, Callable[[], object]]:
    """The baseline's pieces alone, to show where its time goes."""
    codes = generate_codes(CODES)
    content = SheetContent(
        organization="bench",
        account="user0",
        set_id=new_set_id(),
        generated_at=datetime.now(UTC),
        codes=tuple(c.display for c in codes),
    )
    return {
        "5 argon2id hashes": lambda: services.hasher.hash_all(codes),
        "render_pdf": lambda: render_pdf(content),
    }


def _profile(process: Callable[[str], object], ids: Iterator[str]) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(PROFILE_RUNS):
        process(next(ids))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)
    return out.getvalue()


def run() -> list[dict[str, object]]:
    require_services(broker=False)
    with fresh_postgres("bench_worker") as url, tempfile.TemporaryDirectory() as tmp:
        settings = settings_from(server_env(url, Path(tmp)))
        services = Services.build(settings)
        try:
            celery_app = make_celery(settings)
            tasks = register_tasks(celery_app, services)
            total = WARMUP + REPEAT + PROFILE_RUNS
            people = enrolled_people(services, 1, total + 1, with_codes=True)
            scratch = people.pop()
            with services.unit_of_work() as uow:
                scratch_id = accounts.get_user(uow.session, scratch.org_id, scratch.external_id).id
            queued = iter([request_now(services, p) for p in people])
            statuses: list[str] = []

            def ours() -> None:
                statuses.append(tasks.process(next(queued)))

            ms = interleaved_ms(
                {"ours": ours, "irreducible": _irreducible(services, scratch_id)},
                REPEAT,
                warmup=WARMUP,
            )
            if set(statuses) != {"ready"}:
                raise RuntimeError(f"regenerations did not all succeed: {sorted(set(statuses))}")
            with services.unit_of_work() as uow:
                replaced = uow.session.execute(
                    select(func.count())
                    .select_from(BackupCode)
                    .where(BackupCode.deactivated_at.is_not(None))
                ).scalar_one()
                ready = uow.session.execute(
                    select(func.count())
                    .select_from(Regeneration)
                    .where(Regeneration.status == "ready")
                ).scalar_one()
            if ready != len(statuses) or replaced != CODES * len(statuses):
                raise RuntimeError(
                    f"{len(statuses)} processed, but {ready} ready and {replaced} old codes "
                    "deactivated in the database"
                )
            parts = interleaved_ms(_parts(services), 9)
            ratio = ms["ours"] / ms["irreducible"]
            if ratio > BAR or os.environ.get("BENCH_WORKER_PROFILE") == "1":
                print(f"worker ratio {ratio:.2f} (bar {BAR}); cProfile of {PROFILE_RUNS} runs:")
                print(_profile(tasks.process, queued))
        finally:
            services.close()
    verdict = "met" if ratio <= BAR else "MISSED"
    rows: list[dict[str, object]] = [
        {
            "measure": "irreducible: 5 hashes + render_pdf + 1 txn of 5 rows (baseline)",
            "ms": ms["irreducible"],
            "ratio": 1.0,
        },
        {
            "measure": f"regeneration.process task, PostgreSQL ({verdict}: bar {BAR}x)",
            "ms": ms["ours"],
            "ratio": ratio,
        },
    ]
    rows += [
        {"measure": f"  alone: {name}", "ms": value, "ratio": value / ms["irreducible"]}
        for name, value in parts.items()
    ]
    return rows


if __name__ == "__main__":
    print(markdown_table(run()))
