"""The deployed shape: nginx (Debian's package) with the repository's
deploy/nginx.conf in front of `mfa-codes serve` (gunicorn, gthread). 64 sockets
trickle a header byte every 2 s at nginx; every `/healthz` probe through it
meanwhile answers 200, and nginx drops the slow sockets itself
(client_header_timeout). The API's metrics port, with PROMETHEUS_MULTIPROC_DIR
given as compose gives it, counts exactly the probes that reached gunicorn."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.service import healthz_count, scrape
from tests.e2e.slow_clients import probe, probes, slow_sockets
from tests.support.polling import await_true
from tests.support.processes import child_env, free_port, mfa_codes, stop_group
from tests.support.services import REQUIRE_SERVICES
from tests.support.settings import FAST_ARGON2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
SLOW_SOCKETS = 64
# Longer than the config's client_header_timeout (10 s): nginx drops them meanwhile.
HOLD_SECONDS = 20.0
PROBES = 20


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "nginx is not installed (Debian package nginx)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} and MFA_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    return found


def _substitute(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text)
    assert count == 1, f"deploy/nginx.conf: expected one {pattern!r}, found {count}"
    return new


def nginx_config(workdir: Path, listen_port: int, api_port: int) -> Path:
    """The repository's server block on 127.0.0.1, proxying to `serve`, wrapped in a
    main configuration whose pid, logs and temporary files stay in `workdir`."""
    site = NGINX_CONF.read_text()
    site = _substitute(site, r"listen 8000;", f"listen 127.0.0.1:{listen_port};")
    site = _substitute(
        site, r"set \$api_upstream api:8000;", f"set $api_upstream 127.0.0.1:{api_port};"
    )
    (workdir / "site.conf").write_text(site)
    temp = {
        name: workdir / "temp" / name
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    for path in temp.values():
        path.mkdir(parents=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the temp dirs
    main = workdir / "nginx.conf"
    main.write_text(
        f"""{user}worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {workdir / "site.conf"};
}}
"""
    )
    return main


@contextmanager
def _process(
    argv: list[str], log: Path, env: dict[str, str], cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stop_group(proc, timeout=40)


def _answers(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, f"exited early:\n{log.read_text(errors='replace')[-3000:]}"
    return probe("127.0.0.1", port, timeout=1).status == 200


def test_nginx_in_front_of_serve_answers_healthz_while_64_slow_sockets_are_held(
    tmp_path: Path,
) -> None:
    nginx = _nginx()
    api_port, proxy_port, metrics_port = free_port(), free_port(), free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = child_env(MFA_VAR_DIR=str(tmp_path / "var"), MFA_LOG_FORMAT="text", **FAST_ARGON2)
    env.update(
        {"MFA_API_METRICS_PORT": str(metrics_port), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    )
    conf = nginx_config(tmp_path, proxy_port, api_port)
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr

    serve = [
        *mfa_codes(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(api_port),
        "--workers",
        "2",
    ]
    api_log, nginx_log = tmp_path / "serve.log", tmp_path / "nginx.out"
    with _process(serve, api_log, env, tmp_path) as api:
        await_true(lambda: _answers(api_port, api, api_log), 60, "serve to answer /healthz")
        command = [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]
        with _process([*command, "-g", "daemon off;"], nginx_log, env, tmp_path) as proxy:
            await_true(
                lambda: _answers(proxy_port, proxy, nginx_log), 30, "nginx to answer /healthz"
            )
            counted_before = healthz_count(scrape(metrics_port))
            with slow_sockets(
                "127.0.0.1", proxy_port, SLOW_SOCKETS, interval=2.0, hold=HOLD_SECONDS
            ) as held:
                got = probes("127.0.0.1", proxy_port, PROBES, within=HOLD_SECONDS - 8, spacing=0.5)
                assert held.opened == SLOW_SOCKETS
                assert not held.stop.is_set() and held.rounds >= 2
                # Past client_header_timeout (10 s) the sockets are nginx's to drop.
                await_true(
                    lambda: held.closed_by_server == SLOW_SOCKETS,
                    HOLD_SECONDS - 4,
                    "nginx to drop the slow sockets",
                )
            failed = [p for p in got if p.status != 200]
            assert failed == [], f"{len(failed)} of {len(got)} probes failed: {failed[:3]}"
            assert len(got) >= 10, f"only {len(got)} probes"
            # Only whole requests reached gunicorn: the probes, none of the slow ones.
            assert healthz_count(scrape(metrics_port)) - counted_before == len(got)
    access = nginx_log.read_text(errors="replace")
    # The deployed access log: path, status and request id, never a query string.
    assert re.search(r'"GET /healthz" 200 \d+ [\d.]+ rid=[0-9a-f]{32}', access), access[-2000:]
