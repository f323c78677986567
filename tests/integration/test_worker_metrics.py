"""A real `mfa-codes worker` process (prefork) serves its metrics on its own port,
adding up what its children counted (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api_world import api_world
from tests.support.processes import MFA_CODES, free_port, settings_env, stop_group
from tests.support.settings import pg_amqp_settings

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.timeout(120)]


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
    settings = pg_amqp_settings(tmp_path, pg_database_url, amqp_url)
    port = free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = settings_env(settings, MFA_WORKER_METRICS_PORT=str(port))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    worker = subprocess.Popen(
        [str(MFA_CODES), "worker", "--pool", "prefork", "--concurrency", "1"],
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
        stop_group(worker, timeout=30)
