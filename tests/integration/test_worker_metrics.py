"""A real `mfa-codes worker` process (prefork) serves its metrics on its own port,
adding up what its children counted (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.api_helpers import api_world
from tests.support.settings import FAST_ARGON2, TEST_SECRET_KEY, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as got:
        body = got.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_a_prefork_worker_serves_task_durations_and_queue_latency(
    tmp_path: Path, pg_database_url: str, amqp_url: str
) -> None:
    signing_key = base64.b64encode(os.urandom(32)).decode()
    settings = make_settings(
        tmp_path,
        MFA_DATABASE_URL=pg_database_url,
        MFA_BROKER_URL=amqp_url,
        MFA_AUDIT_SIGNING_KEY=signing_key,
    )
    port = _free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {
        **os.environ,
        **FAST_ARGON2,
        "MFA_DATABASE_URL": pg_database_url,
        "MFA_BROKER_URL": amqp_url,
        "MFA_SECRET_KEY": TEST_SECRET_KEY,
        "MFA_AUDIT_SIGNING_KEY": signing_key,
        "MFA_VAR_DIR": str(settings.var_dir),
        "MFA_QUEUE_PREFIX": settings.queue_prefix,
        "MFA_WORKER_METRICS_PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    script = Path(sys.executable).with_name("mfa-codes")
    worker = subprocess.Popen(
        [str(script), "worker", "--pool", "prefork", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with api_world(settings, worker=False) as world:
            org = world.org()
            tok, body = world.enroll(org)
            done = world.await_status(tok, body["regeneration"]["id"], timeout=60)
            assert done["status"] == "ready"
        key = (
            "mfa_task_duration_seconds_count",
            (("state", "SUCCESS"), ("task", "regeneration.process")),
        )
        deadline = time.monotonic() + 30
        while True:  # the child records the duration just after committing the status
            try:
                samples = _scrape(port)
            except OSError:
                samples = {}
            if samples.get(key) == 1.0:
                break
            assert time.monotonic() < deadline, f"no task duration on :{port}"
            time.sleep(0.1)
        assert samples[("mfa_regeneration_queue_latency_seconds_count", ())] == 1.0
        assert samples[("mfa_regenerations_total", (("outcome", "ready"),))] == 1.0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
