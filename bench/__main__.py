"""`make bench`: run every benchmark, print a markdown table each, write bench/results/latest.md."""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from pathlib import Path

from bench.common import markdown_table

SUITES = [
    ("Code primitives", "bench.bench_codes"),
    ("Sign-in check: one verification vs every hash in turn", "bench.bench_signin"),
    ("Sign-in under load: verify vs bare argon2id, 1-8 clients", "bench.bench_signin_load"),
    ("Audit trail", "bench.bench_audit"),
    ("Mail: an event that causes mails vs one that does not", "bench.bench_mail"),
    ("Worker: regeneration vs its irreducible work", "bench.bench_worker"),
    (
        "Token lookup: expiry, revocation, last_used_at vs a plain select",
        "bench.bench_token_lookup",
    ),
    ("Intake: POST regenerations vs a bare Falcon INSERT", "bench.bench_intake"),
    ("Latency: POST to ready vs the worker's own time", "bench.bench_latency"),
    ("Worker scaling: 1 vs 2 processes", "bench.bench_scaling"),
    ("Slow clients: /healthz with and without 64 slow sockets", "bench.bench_slow_clients"),
    ("Webhooks: deliveries vs bare POSTs; intake with 2 webhooks vs none", "bench.bench_webhooks"),
    ("Pages: first load in chromium vs a bare HTML page", "bench.bench_ui_load"),
]


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: list[str]) -> int:
    wanted = set(argv)
    out = [
        "# Benchmarks",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {_load()} at start (other processes share the CPUs: ratios are "
        "measured side by side in one run for that reason)",
        "",
    ]
    failed = 0
    for title, module_name in SUITES:
        if wanted and module_name.rsplit(".", 1)[-1] not in wanted:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # a suite not written yet
            failed += 1  # the suite exists but cannot import what it needs: say so
            out += [f"## {title}", "", f"failed: {exc!r}", ""]
            print(f"{module_name} failed: {exc!r}", flush=True)
            continue
        print(f"== {title} ({module_name})", flush=True)
        began = time.monotonic()
        try:
            rows = module.run()
        except Exception as exc:  # a broken suite is reported, the others still run
            failed += 1
            out += [f"## {title}", "", f"failed: {exc!r}", ""]
            print(f"failed: {exc!r}", flush=True)
            continue
        table = markdown_table(rows)
        print(table, flush=True)
        print(f"({time.monotonic() - began:.0f} s)", flush=True)
        out += [f"## {title}", "", table, ""]
    results = Path("bench/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / "latest.md").write_text("\n".join(out))
    print(f"written to {results / 'latest.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
